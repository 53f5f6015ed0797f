"""Photo analysis through the running service: 20 face photos of 12 MP, from the upload's answer to the last `analyzed`.

For each backend it starts the real `lookalike serve` (API plus its 2-process worker) on a
temporary data folder and, --runs times, each into a new subject, posts the 20 photos of
bench/upload.py (4000x3000 JPEG, about 5 MB each, 4 stored sideways with an EXIF tag) in one
request. The clock starts when the 202 arrives and stops when GET .../photos first shows all
20 `analyzed` (the subject's counts polled every 100 ms; the end is the last photo's own
`analyzed_at`, so the polling interval does not add to it); the rate is 20 over that time.

Backends: `embedded` (SQLite, folder storage, filesystem queue: the defaults) and `postgres`
(Postgres and Redis from LOOKALIKE_TEST_DATABASE_URL / LOOKALIKE_TEST_REDIS_URL, or
127.0.0.1's; a database of its own is created and dropped, and a key prefix keeps its queue
apart).

The baseline, measured in the same run on the same 20 photos, is the plain `analyze_image`
(decode, faces, encodings, measures, crop, thumbnail) on a pool of 2 processes, already warm:
everything the service adds (upload parsing, rows, storage, queue, subject review) shows as
the gap between the two rates. Target: at least 8 photos a second end to end.

    .venv/bin/python bench/analysis_service.py [--runs 3] [--backends embedded,postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from upload import machine, make_inputs, report, served  # noqa: E402

TARGET_RATE = 8.0
PROCESSES = 2  # the worker's default concurrency
POLL_S = 0.1


def _warm(_: int) -> None:
    from worker.analysis.faces import FaceModels

    FaceModels.get().load_all()


def _upright(path: Path) -> bytes:
    from PIL import Image, ImageOps

    out = io.BytesIO()
    ImageOps.exif_transpose(Image.open(path)).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


def _analyze_bytes(data: bytes) -> int:
    from worker.analysis.pipeline import analyze_image

    return analyze_image(data).face_count


def plain_rate(paths: list[Path], rounds: int = 2) -> tuple[float, list[int]]:
    """Photos per second of `analyze_image` alone on PROCESSES warm processes (upright copies, as stored)."""
    with ProcessPoolExecutor(PROCESSES) as pool:
        data = list(pool.map(_upright, paths))
        list(pool.map(_warm, range(PROCESSES)))
        faces = list(pool.map(_analyze_bytes, data))  # warm-up pass, also the face counts
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            list(pool.map(_analyze_bytes, data))
            rates.append(len(data) / (time.perf_counter() - t0))
    return max(rates), faces


def postgres_env() -> tuple[dict[str, str], Callable[[], None]]:
    """Env for a fresh database on the test Postgres and a key prefix on the test Redis; and its clean-up."""
    import psycopg

    admin_url = os.environ.get("LOOKALIKE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("LOOKALIKE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"lookalike_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    env = {
        "LOOKALIKE_DATABASE_URL": f"{base}/{name}",
        "LOOKALIKE_BROKER_URL": redis_url,
        "LOOKALIKE_BROKER_KEY_PREFIX": f"{name}:",
    }

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return env, drop


def one_upload(client: httpx.Client, files: list[tuple[str, bytes]], run: int) -> tuple[float, float]:
    """(seconds until the 202, seconds from the 202 until all are analyzed)."""
    sid = client.post("/v1/subjects", json={"name": f"bench {run}", "class_word": "man", "consent": True})
    sid = sid.raise_for_status().json()["id"]
    parts = [("files", (name, data, "image/jpeg")) for name, data in files]
    t0 = time.time()
    r = client.post(f"/v1/subjects/{sid}/photos", files=parts)
    answered = time.time()
    if r.status_code != 202 or len(r.json()["photos"]) != len(files):
        raise RuntimeError(f"upload answered {r.status_code}: {r.text[:500]}")
    while True:  # the subject's counts: a cheap read, so the polling takes little from the worker
        counts = client.get(f"/v1/subjects/{sid}").raise_for_status().json()["photos"]
        if counts["failed"]:
            raise RuntimeError(f"analysis failed: {counts}")
        if counts["analyzed"] == len(files):
            break
        if time.time() - answered > 300:
            raise RuntimeError(f"not all analyzed after 300 s: {counts}")
        time.sleep(POLL_S)
    items = client.get(f"/v1/subjects/{sid}/photos", params={"limit": 1000}).raise_for_status().json()["items"]
    # The end is the last photo's own `analyzed_at` (same clock, this machine), not the poll that saw it.
    done = max(datetime.fromisoformat(p["analyzed_at"]).timestamp() for p in items)
    faces = [p["face_count"] for p in items]
    if min(faces) < 1:
        raise RuntimeError(f"a face photo was analysed with no face: {faces}")
    return answered - t0, done - answered


def measure_backend(backend: str, files: list[tuple[str, bytes]], runs: int) -> list[tuple[float, float]]:
    extra, cleanup = ({}, lambda: None) if backend == "embedded" else postgres_env()
    measured = []
    try:
        with served(extra) as client:
            one_upload(client, files[:2], -1)  # warm: models loaded in both worker processes
            for run in range(runs):
                measured.append(one_upload(client, files, run))
                answer, analysed = measured[-1]
                print(
                    f"{backend} run {run + 1}: 202 after {answer:.2f} s, then all analyzed in "
                    f"{analysed:.2f} s ({len(files) / analysed:.1f} photos/s)",
                    file=sys.stderr,
                )
    finally:
        cleanup()
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="embedded,postgres")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    paths = make_inputs()
    files = [(p.name, p.read_bytes()) for p in paths]
    plain, faces = plain_rate(paths)
    print(f"plain analyze_image, {PROCESSES} processes: {plain:.2f} photos/s (faces per photo {set(faces)})")

    results: dict[str, object] = {"machine": machine(), "plain_rate": plain, "target_rate": TARGET_RATE}
    rows = [("machine", results["machine"]), (f"plain analyze_image, {PROCESSES} processes", f"{plain:.2f} photos/s")]
    for backend in args.backends.split(","):
        measured = measure_backend(backend, files, args.runs)
        answers = [a for a, _ in measured]
        rates = [len(files) / b for _, b in measured]
        rate = statistics.median(rates)
        verdict = "PASS" if rate >= TARGET_RATE else "MISS"
        results[backend] = {"upload_answer_s": answers, "rates": rates, "median_rate": rate, "verdict": verdict}
        rows.append(
            (
                f"{backend}: 202 -> all analyzed",
                f"median {rate:.2f} photos/s (min {min(rates):.2f}, max {max(rates):.2f}; "
                f"{rate / plain:.0%} of plain), upload answer median {statistics.median(answers):.2f} s: {verdict}",
            )
        )
    rows.append(("target", f">= {TARGET_RATE:.0f} photos/s from the upload's answer to the last analyzed"))
    report(rows, results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
