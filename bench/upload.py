"""Upload benchmark: 20 phone-sized photos through the real service, embedded defaults.

Starts `lookalike serve` (SQLite, folder storage, Celery filesystem transport, API and worker
on this machine) on a temporary data folder and measures, --runs times, each on a new subject:

  * response: one POST /v1/subjects/{id}/photos with all 20 files (about 100 MB of 4000x3000
    JPEG), from the start of the request until the 202 arrives;
  * all analyzed: from the start of that request until GET .../photos shows all 20 `analyzed`
    (polled every 50 ms);
  * floor: the same POST again into the same subject: every file is then a byte-identical
    duplicate, so the server only receives, parses and hashes the body and answers 202 with
    every file in `rejected` (`duplicate_file`).

It prints median and min of each, next to an in-process baseline of the project's own
`prepare_image` (decode, EXIF rotation, sRGB, JPEG q95) on the same files, one
after another on one thread and on a pool of one thread per core (the API's default).
Inputs are made once from the face fixtures (cropped to 4:3, upscaled, noise added so JPEG
q95 lands near 5 MB, 4 of them stored sideways with an EXIF orientation) into bench/out/.

    .venv/bin/python bench/upload.py [--runs 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.core.settings import Settings  # noqa: E402
from app.photos.ingest import Candidate, prepare_image  # noqa: E402

OUT = ROOT / "bench" / "out"
LOOKALIKE = Path(sys.executable).with_name("lookalike")  # the venv's entry point
# Fixture -> where the face sits, as a fraction of the height (the crops keep it in frame).
SOURCES = {
    "obama.jpg": 0.2,
    "obama2.jpg": 0.33,
    "obama3.jpg": 0.15,
    "biden.jpg": 0.17,
    "obama_partial_face.jpg": 0.2,
    "obama_partial_face2.jpg": 0.2,
}
COUNT, SIZE, QUALITY, TARGET_S = 20, (4000, 3000), 95, 3.0
GOAL_BYTES = 5_000_000
VERSION = "v2"  # bump when the recipe changes, so stale cached inputs are not reused


def _crop(img: Image.Image, ratio: float, face_y: float, jitter: float) -> Image.Image:
    """The largest crop of aspect `ratio` (w/h) keeping the face (at height fraction face_y) in, nudged."""
    w, h = img.size
    if w / h > ratio:
        cw, ch = round(h * ratio), h
        x, y = round((w - cw) * (0.5 + (jitter - 0.4) / 4)), 0
    else:
        cw, ch = w, round(w / ratio)
        x, y = 0, min(max(0, round(face_y * h - ch / 2 + jitter * 0.05 * h)), h - ch)
    return img.crop((x, y, x + cw, y + ch))


def _encode(pixels: np.ndarray, exif: bytes | None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=QUALITY, **({"exif": exif} if exif else {}))
    return out.getvalue()


def make_one(i: int) -> bytes:
    """Photo i: a fixture, cropped and upscaled to 4000x3000 pixels, with noise seeded by i."""
    name, face_y = list(SOURCES.items())[i % len(SOURCES)]
    src = Image.open(ROOT / "tests" / "fixtures" / name).convert("RGB")
    orientation = (6, 8)[i // 5 % 2] if i % 5 == 0 else None  # 4 of 20: stored sideways, tagged
    jitter = (i // len(SOURCES)) / 4
    if orientation:  # upright is 3000x4000 portrait; the pixels are stored rotated, as phones do
        upright = _crop(src, 3 / 4, face_y, jitter).resize(SIZE[::-1], Image.Resampling.BICUBIC)
        img = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
        exif = Image.Exif()
        exif[0x0112] = orientation  # Orientation
        exif_bytes = exif.tobytes()
    else:
        img, exif_bytes = _crop(src, 4 / 3, face_y, jitter).resize(SIZE, Image.Resampling.BICUBIC), None
    base = np.asarray(img, dtype=np.float32)
    noise, sigma = np.random.default_rng(1000 + i).standard_normal(base.shape, dtype=np.float32), 6.5
    for _ in range(4):  # JPEG size grows about linearly with the noise; a few secant steps
        data = _encode(np.clip(base + sigma * noise, 0, 255).astype(np.uint8), exif_bytes)
        if abs(len(data) - GOAL_BYTES) < 0.04 * GOAL_BYTES:
            break
        sigma = max(0.5, sigma + (GOAL_BYTES - len(data)) / 600_000)
    return data


def make_inputs() -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    paths = [OUT / f"photo_{VERSION}_{i:02d}.jpg" for i in range(COUNT)]
    for stale in set(OUT.glob("photo_*.jpg")) - set(paths):
        stale.unlink()
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        print(f"generating {len(missing)} input photos in {OUT} ...", file=sys.stderr)
        for i in missing:
            tmp = paths[i].with_suffix(".tmp")
            tmp.write_bytes(make_one(i))
            tmp.replace(paths[i])
    return paths


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    model = models[0] if models else "unknown CPU"
    return f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {model}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lookalike(*args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(LOOKALIKE), *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"lookalike {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, str, Path]:
    port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "LOOKALIKE_PORT": str(port),
        "LOOKALIKE_HOST": "127.0.0.1",
        "LOOKALIKE_LOG_LEVEL": "WARNING",
    }
    lookalike("migrate", env=env)
    key = lookalike("users", "create", "bench@example.com", env=env).stdout.strip().splitlines()[-1]
    log = data_dir / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(LOOKALIKE), "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, f"http://127.0.0.1:{port}", key, log


def wait_ready(proc: subprocess.Popen, base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lookalike serve exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("lookalike serve did not become ready")


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user would (serve then stops its worker); SIGKILL both groups if that hangs."""
    if proc.poll() is not None:
        return
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    worker_pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=90)  # serve itself gives its worker up to 60 s
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *worker_pids]:  # each runs in its own session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def served(extra_env: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """`lookalike serve` on a temporary data folder, ready, and a client with a user's key; stopped afterwards.

    When the block fails, the tail of the server's log is printed before the error.
    """
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        proc, base, key, log = start_server(Path(tmp), extra_env)
        try:
            wait_ready(proc, base)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
                yield client
        except BaseException:
            print(f"--- tail of {log.name} ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop_server(proc)


def upload_once(client: httpx.Client, files: list[tuple[str, bytes]], run: int) -> tuple[float, float, float]:
    r = client.post("/v1/subjects", json={"name": f"bench {run}", "class_word": "man", "consent": True})
    r.raise_for_status()
    sid = r.json()["id"]
    parts = [("files", (name, data, "image/jpeg")) for name, data in files]
    t0 = time.perf_counter()
    r = client.post(f"/v1/subjects/{sid}/photos", files=parts)
    response_s = time.perf_counter() - t0
    if r.status_code != 202 or len(r.json()["photos"]) != len(files):
        raise RuntimeError(f"upload answered {r.status_code}: {r.text[:500]}")
    while True:
        items = client.get(f"/v1/subjects/{sid}/photos", params={"limit": 1000}).raise_for_status().json()["items"]
        statuses = [p["status"] for p in items]
        if "failed" in statuses:
            raise RuntimeError(f"analysis failed: {[p['error'] for p in items if p['status'] == 'failed']}")
        if len(statuses) == len(files) and all(s == "analyzed" for s in statuses):
            analyzed_s = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"not all analyzed after 300 s: {statuses}")
        time.sleep(0.05)
    # Floor: the same body again; all duplicates, so no decoding (see the module docstring).
    t1 = time.perf_counter()
    r = client.post(f"/v1/subjects/{sid}/photos", files=parts)
    floor_s = time.perf_counter() - t1
    if r.status_code != 202 or r.json()["photos"] or len(r.json()["rejected"]) != len(files):
        raise RuntimeError(f"duplicate re-upload answered {r.status_code}, not all rejected: {r.text[:300]}")
    return response_s, analyzed_s, floor_s


def in_process(files: list[tuple[str, bytes]], threads: int) -> float:
    """Seconds for prepare_image on every file: one after another, or on a pool of `threads`."""
    settings, t0 = Settings(), time.perf_counter()
    if threads == 1:
        for name, data in files:
            prepare_image(Candidate(name, data), settings)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda f: prepare_image(Candidate(*f), settings), files))
    return time.perf_counter() - t0


def report(rows: list[tuple[str, str]], results: dict, json_path: Path | None) -> None:
    """Print `rows` as an aligned two-column table; also write `results` to `json_path` when given."""
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def _mm(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s, min {min(xs):.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="uploads to time (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()

    files = [(p.name, p.read_bytes()) for p in make_inputs()]
    mean_mb = statistics.mean(len(d) for _, d in files) / 1e6
    tagged = sum(1 for _, d in files if Image.open(io.BytesIO(d)).getexif().get(0x0112, 1) != 1)
    threads = Settings().upload_threads or os.cpu_count() or 2

    seq_s = in_process(files, 1)
    pool_s = in_process(files, threads)

    measured: list[tuple[float, float, float]] = []
    with served() as client:
        for run in range(args.runs):
            measured.append(upload_once(client, files, run))
            print(
                "run {}: response {:.2f} s, all analyzed {:.2f} s, duplicate re-upload {:.2f} s".format(
                    run + 1, *measured[-1]
                ),
                file=sys.stderr,
            )

    responses, analyzed, floors = (list(xs) for xs in zip(*measured, strict=True))
    verdict = "PASS" if statistics.median(responses) < TARGET_S else "FAIL"
    results = {
        "machine": machine(),
        "input": {
            "count": len(files),
            "resolution": f"{SIZE[0]}x{SIZE[1]}",
            "mean_mb": round(mean_mb, 2),
            "total_mb": round(mean_mb * len(files), 1),
            "exif_rotated": tagged,
        },
        "runs": args.runs,
        **{
            name: {"median": statistics.median(xs), "min": min(xs), "all": xs}
            for name, xs in (("response_s", responses), ("all_analyzed_s", analyzed), ("duplicate_reupload_s", floors))
        },
        "in_process_sequential_s": seq_s,
        "in_process_pool_s": {"threads": threads, "seconds": pool_s},
        "target_response_s": TARGET_S,
        "verdict": verdict,
    }
    rows = [
        ("machine", results["machine"]),
        (
            "input",
            f"{len(files)} x {SIZE[0]}x{SIZE[1]} JPEG q{QUALITY}, mean {mean_mb:.2f} MB "
            f"({mean_mb * len(files):.0f} MB total), {tagged} EXIF-rotated",
        ),
        ("upload response", f"{_mm(responses)} ({args.runs} runs)"),
        ("all analyzed", _mm(analyzed)),
        ("floor: re-upload (duplicates)", f"{_mm(floors)} (same body, all duplicates: receive + parse + hash only)"),
        ("in-process, 1 thread", f"{seq_s:.2f} s (prepare_image x {len(files)}, sequential)"),
        (f"in-process, {threads} threads", f"{pool_s:.2f} s (prepare_image on a thread pool)"),
        ("target", f"response < {TARGET_S:.0f} s"),
        ("result", verdict),
    ]
    report(rows, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
