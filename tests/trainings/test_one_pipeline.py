"""One pipeline: the service and `lookalike train` run the same stages, and a new family plugs in by itself."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from tests.helpers import FIXTURES
from tests.trainings.conftest import PHOTOS
from tests.trainings.test_training_api import start, wait_done


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, folder / name)
    return folder


def test_service_and_cli_write_byte_identical_loras(
    client: Any, account: Any, ready_subject: dict, settings: Any, tmp_path: Path
) -> None:
    """Same photos, seed and settings through the API's worker and through `lookalike train`: the same bytes."""
    from worker.training.local import train_folder

    created = start(client, account, ready_subject["id"], name="same", trigger_word="zorvek", steps=6, seed=7)
    assert created.status_code == 202, created.text
    done = wait_done(client, account, created.json()["id"])
    assert done["status"] == "succeeded", done
    served = {
        fmt: client.get(f"/v1/models/{done['model_id']}/download?format={fmt}", headers=account.headers).content
        for fmt in ("diffusers", "kohya")
    }

    run = train_folder(
        _folder(tmp_path),
        output=tmp_path / "out",
        settings=settings,
        base_model="tiny-sd15",
        name="same",
        trigger_word="zorvek",
        class_word=ready_subject["class_word"],
        seed=7,
        overrides={"steps": 6},
    )
    assert [p.path.name for p in run.photos if p.selected] == list(PHOTOS)
    for fmt, data in served.items():
        assert run.files[fmt].read_bytes() == data, f"the {fmt} files differ"


def test_a_fourth_family_needs_only_its_module_and_the_catalogue(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A family registered by a test (an SD1.5 twin under another name) trains and exports through every stage."""
    from app.trainings import catalog
    from worker.training import families
    from worker.training.families.sd15 import SD15
    from worker.training.local import train_folder

    class Twin(SD15):
        name = "twin"
        base_model_version = "twin_v1"
        architecture = "twin/lora"

    spec = dataclasses.replace(catalog.FAMILIES["sd15"], name="twin", label="Twin")
    monkeypatch.setitem(catalog.FAMILIES, "twin", spec)
    monkeypatch.setitem(catalog.PRESETS, "tiny-twin", ("twin", "tiny-sd15"))
    monkeypatch.setattr(catalog, "TINY_PRESETS", (*catalog.TINY_PRESETS, "tiny-twin"))
    monkeypatch.setitem(families._REGISTERED, "twin", Twin)
    monkeypatch.setattr(settings, "min_training_photos", 3)

    run = train_folder(
        _folder(tmp_path),
        output=tmp_path / "twin",
        settings=settings,
        base_model="tiny-twin",
        trigger_word="zorvek",
        class_word="man",
        overrides={"steps": 3},
    )
    with safe_open(run.files["diffusers"], "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["lookalike.family"] == "twin" and meta["modelspec.architecture"] == "twin/lora"
    assert keys and all(k.startswith("unet.") for k in keys)
    with safe_open(run.files["kohya"], "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "twin_v1"
        assert all(k.startswith("lora_unet_") for k in f.keys())  # noqa: SIM118 - safe_open has no __iter__
