"""`lookalike train` on a folder: no database or queue, both files written, bad photos skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from click.testing import CliRunner
from safetensors.torch import load_file

from app.cli import main
from tests.procs import BIN

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "coffee.png"):
        shutil.copy(FIXTURES / name, photos / name)
    (photos / "obama2.txt").write_text("{trigger} in a dark suit")
    (photos / "notes.md").write_text("not a photo")
    return photos


def test_train_folder(tmp_path: Path, settings) -> None:  # noqa: ANN001 - the run's settings: tiny presets go in its data dir
    out = tmp_path / "out"
    args = [
        "train", str(_folder(tmp_path)), "--base-model", "tiny-sd15", "--steps", "4", "--output", str(out),
        "--min-photos", "3", "--class-word", "man", "--trigger-word", "zorvek",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Trigger word: zorvek" in result.output and "noise" in result.output
    assert "skip biden.jpg (different_person)" in result.output and "skip coffee.png (no_face)" in result.output
    diffusers, kohya = load_file(out / "lora.safetensors"), load_file(out / "lora_kohya.safetensors")
    assert all(k.startswith("unet.") for k in diffusers) and all(k.startswith("lora_unet_") for k in kohya)
    assert not (out / ".work").exists()  # cache and checkpoints are cleaned up
    # The assessment ran and says honestly that the tiny model's samples have no face.
    assert "Verdict: failed" in result.output and "No faces in the samples" in result.output
    assert (out / "contact_sheet.jpg").read_bytes()[:2] == b"\xff\xd8" and list((out / "samples").glob("*.jpg"))

    too_few = CliRunner().invoke(main, [*args[:-6], "--min-photos", "10"])
    assert too_few.exit_code == 1 and "at least 10" in too_few.output


def test_a_failed_assessment_still_delivers_the_trained_lora(tmp_path: Path, settings, monkeypatch) -> None:  # noqa: ANN001
    """The LoRA is trained by then: an assessment that breaks exports the final weights, unassessed."""
    import worker.assessment.stage as stage

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("face detector unavailable")

    monkeypatch.setattr(stage, "score_image", broken)
    out = tmp_path / "out"
    args = ["train", str(_folder(tmp_path)), "--base-model", "tiny-sd15", "--steps", "3", "--output", str(out)]
    result = CliRunner().invoke(main, [*args, "--min-photos", "3", "--class-word", "man"])
    assert result.exit_code == 0, result.output
    assert "The assessment could not run" in result.output
    assert load_file(out / "lora.safetensors") and not (out / "contact_sheet.jpg").exists()


def test_the_terminal_shows_our_lines_and_the_libraries_only_when_verbose(tmp_path: Path, settings) -> None:  # noqa: ANN001
    """As a user runs it (a fresh process): no library warnings by default, theirs with --verbose."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        shutil.copy(FIXTURES / name, photos / name)
    args = [str(BIN), "train", str(photos), "--base-model", "tiny-sd15", "--steps", "2", "--min-photos", "3"]

    quiet = subprocess.run([*args, "--output", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # setuptools' pkg_resources notice, transformers' torchvision fallbacks: gone
    for noise in ("Warning", "pkg_resources", "torchvision", "[transformers]", "[diffusers]"):
        assert noise not in quiet.stdout
    assert "ok   obama.jpg" in quiet.stdout and "Trigger word:" in quiet.stdout

    loud = subprocess.run(
        [*args, "--output", str(tmp_path / "b"), "--verbose"], capture_output=True, text=True, timeout=300
    )
    assert loud.returncode == 0, loud.stderr
    assert "pkg_resources" in loud.stderr or "torchvision" in loud.stderr
