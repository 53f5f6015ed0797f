"""bench/gpu.py end to end on the CPU with --tiny: the GPU run's code path, on the tiny presets' configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_tiny_run_measures_both_families_and_counts_flops(tmp_path: Path) -> None:
    out = _run("--tiny", "--json", str(tmp_path / "gpu.json"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["tiny"] and result["resolution"] == 64 and result["rank"] == 16
    families = {f["family"]: f for f in result["families"]}
    assert set(families) == {"sdxl", "flux"}
    for family in families.values():
        rows = family["rows"]
        # eager only on the CPU (the trainer compiles only on CUDA), checkpointing off and on, batches 1 and 2
        tried = sorted((r["checkpointing"], r["compile"], r["batch"]) for r in rows)
        assert tried == [(False, False, 1), (False, False, 2), (True, False, 1), (True, False, 2)]
        assert all(r["status"] == "ok" for r in rows), rows
        assert all(r["s_per_step"] > 0 and len(r["step_times"]) == 2 and r["warmup_s"] > 0 for r in rows)
        assert family["flops_per_sample"] > 0 and family["flops_counted"] == "one eager step at batch 1"
        assert all(r["flops"] == family["flops_per_sample"] * r["batch"] for r in rows)
        assert all(r["peak_gib"] is None and r["mfu"] is None for r in rows)  # no GPU figures from a CPU
        assert family["lora_parameters"] > 0
    assert [t["verdict"] for t in result["targets"]] == ["not judged (CPU, tiny presets)"] * 2
    assert result["recommended"] == {"sdxl": None, "flux": None}

    table = [line for line in out.stdout.splitlines() if line.startswith("| SDXL |") or line.startswith("| FLUX")]
    assert len(table) == 8 and all(line.rstrip().endswith("| ok |") for line in table)
    assert "not a GPU figure" in out.stdout
    assert "torch.compile rows not run" in out.stdout

    # The meta device counts the same FLOPs from shapes alone (how the full-size figures are checked on a CPU).
    meta = _run("--tiny", "--meta", "--json", str(tmp_path / "meta.json"))
    assert meta.returncode == 0, meta.stderr[-3000:]
    counted = {f["family"]: f["flops_per_sample"] for f in json.loads((tmp_path / "meta.json").read_text())["families"]}
    assert counted == {name: f["flops_per_sample"] for name, f in families.items()}


def test_full_size_needs_a_gpu_and_families_are_checked() -> None:
    with pytest.raises(SystemExit):
        gpu.parse(["--device", "cpu"])
    with pytest.raises(SystemExit):
        gpu.parse(["--tiny", "--families", "sdxl,sd3"])


def _row(batch: int, gib: float, *, checkpointing: bool = True, status: str = "ok") -> gpu.Row:
    return gpu.Row("sdxl", checkpointing, False, batch, status=status, s_per_step=0.1, peak_gib=gib)


def test_recommended_batch_table_follows_measured_memory() -> None:
    # 10 GiB of model, 6 GiB per image: an 80 GB card (78 GiB) plans on 70 GiB, so batch 8 (58 GiB), not 16.
    rows = [
        _row(1, 16),
        _row(2, 22),
        _row(4, 34),
        _row(8, 58),
        _row(16, 0, status="oom"),
        _row(1, 30, checkpointing=False),
    ]
    rec = gpu.recommend(rows)
    assert rec is not None
    assert rec["gib_at_batch"]["base"] == pytest.approx(10) and rec["gib_at_batch"]["per_image"] == pytest.approx(6)
    table = rec["batch_at_1024"]
    assert table == [(31.0, 1), (39.0, 2), (78.0, 4), (139.0, 8), (1e9, 16)]

    def batch_for(gib: float) -> int:
        return next(size for limit, size in table if gib < limit)

    assert (batch_for(23.6), batch_for(39.4), batch_for(79.2), batch_for(140.4)) == (1, 4, 8, 16)
    assert gpu.recommend(rows[:1]) is None  # one point cannot say what a second image costs


def test_peak_tflops_by_card_name() -> None:
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.0
    assert gpu.peak_tflops("NVIDIA GeForce RTX 3090") is None


@pytest.mark.slow
def test_out_of_time_configurations_are_skipped_and_flops_still_counted(tmp_path: Path) -> None:
    from worker.training.presets import ensure_tiny

    args = gpu.parse(["--tiny", "--families", "flux"])
    spec = gpu.SPECS["flux"]
    result = gpu.FamilyResult("flux", spec.label, spec.tiny)
    saved: list[int] = []
    deadline = 0.0  # long gone
    gpu.bench_family(spec, ensure_tiny(spec.tiny, tmp_path), args, deadline, result, lambda: saved.append(1))
    assert [(r.checkpointing, r.batch, r.status) for r in result.rows] == [
        (False, 1, "skipped: time budget"),
        (False, 2, "skipped: time budget"),
        (True, 1, "skipped: time budget"),
        (True, 2, "skipped: time budget"),
    ]
    assert len(saved) >= 4  # results are written as they come, so a run cut short keeps them
    assert result.flops_per_sample and result.flops_counted.startswith("the meta device")
