"""`lookalike generate` with LoRA files on disk: images written, the trigger word added, a sweep's sheet, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from app.cli import main
from app.core.settings import Settings
from tests.helpers import LoraMaker
from worker.generation.engine import Engine
from worker.generation.local import generate_files

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def run(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The command, with the tiny presets of this test run."""
    settings = Settings(data_dir=tmp_path / "data", models_dir=models_dir)
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return lambda *args: CliRunner().invoke(main, ["generate", *args])


def _file(tmp_path: Path, make_lora: LoraMaker, family: str, **kwargs: object) -> str:
    path = tmp_path / f"{family}-{len(list(tmp_path.glob('*.safetensors')))}.safetensors"
    path.write_bytes(make_lora(family, **kwargs))
    return str(path)


def test_generate_writes_images(run, tmp_path: Path, make_lora: LoraMaker) -> None:  # noqa: ANN001
    lora, out = _file(tmp_path, make_lora, "sd15"), tmp_path / "out"
    args = ["--lora", f"{lora}:0.9", "--prompt", "a photo", "--num-outputs", "2", "--seed", "7", "--steps", "2"]
    result = run(*args, "--output-format", "jpg", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Base model: tiny-sd15" in result.output  # from the file's metadata
    assert "Added the trigger word of" in result.output and "zorvek person, a photo" in result.output
    assert "noise" in result.output and "Seed:" not in result.output  # the seed was given
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["seed7.jpg", "seed8.jpg"]
    assert result.output.count("wrote ") == 2 and Image.open(written[0]).size == (64, 64)
    # Again into the same folder: nothing is overwritten; same seed, same image.
    again = run(*args, "--output-format", "jpg", "--out", str(out))
    assert again.exit_code == 0 and (out / "seed7-2.jpg").read_bytes() == (out / "seed7.jpg").read_bytes()


def test_sweep_writes_a_contact_sheet(run, tmp_path: Path, make_lora: LoraMaker) -> None:  # noqa: ANN001
    lora, out = _file(tmp_path, make_lora, "sd15"), tmp_path / "out"
    result = run("--lora", lora, "--prompt", "zorvek, a photo", "--sweep", "--steps", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Seed: " in result.output and "Added the trigger word" not in result.output
    assert len(list(out.glob("seed*-scale*.png"))) == 7 and (out / "contact_sheet.jpg").exists()
    sheet = Image.open(out / "contact_sheet.jpg")
    assert sheet.format == "JPEG" and sheet.width > 7 * 64


def test_img2img_and_webp(run, tmp_path: Path, make_lora: LoraMaker) -> None:  # noqa: ANN001
    lora, out = _file(tmp_path, make_lora, "sd15"), tmp_path / "out"
    args = ["--lora", lora, "--prompt", "a photo", "--image", str(FIXTURES / "obama.jpg"), "--prompt-strength", "0.5"]
    result = run(*args, "--steps", "4", "--output-format", "webp", "--seed", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert Image.open(out / "seed1.webp").format == "WEBP"


def test_a_lora_of_another_family_exits_2(run, tmp_path: Path, make_lora: LoraMaker) -> None:  # noqa: ANN001
    lora = _file(tmp_path, make_lora, "sdxl")
    result = run("--lora", lora, "--base-model", "tiny-sd15", "--prompt", "a photo", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "is a LoRA for SDXL; the base model tiny-sd15 is SD1.5" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    bare = _file(tmp_path, make_lora, "sd15", meta=False)  # no metadata: the base model must be given
    result = run("--lora", bare, "--prompt", "a photo", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "--base-model" in result.output


def test_a_refused_prompt_exits_before_any_image(run, tmp_path: Path, make_lora: LoraMaker) -> None:  # noqa: ANN001
    lora = _file(tmp_path, make_lora, "sd15")
    result = run("--lora", lora, "--prompt", "zorvek, nude", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "sexual content" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_generate_files_with_two_loras(tmp_path: Path, models_dir: Path, make_lora: LoraMaker) -> None:
    engine = Engine(models_dir=models_dir, device="cpu")
    settings = Settings(data_dir=tmp_path / "data", models_dir=models_dir)
    first, second = Path(_file(tmp_path, make_lora, "flux")), Path(_file(tmp_path, make_lora, "flux", seed=5))
    notes: list[str] = []
    paths = generate_files(
        [(first, 1.0), (second, 0.5)], prompt="a photo", out=tmp_path / "out", settings=settings, seed=3,
        steps=2, aspect_ratio="16:9", engine=engine, note=notes.append,
    )  # fmt: skip
    assert [p.name for p in paths] == ["seed3.png"]
    width, height = Image.open(paths[0]).size
    assert width > height and width % 16 == 0 and height % 16 == 0
    # Both LoRAs name the same trigger word: it is added once.
    assert sum("Added the trigger word" in n for n in notes) == 1
