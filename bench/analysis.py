"""Photo analysis benchmark: 12-megapixel photos per second, and a 1,500-photo subject.

Inputs are made from the face fixtures by upscaling them to 12 megapixels (JPEG q95), into
bench/out/analysis/ (kept between runs). Three measurements, all on this machine:

  1. rate: `analyze_image` (detection, encodings, pose, quality, crop, thumbnail) over the 9
     fixtures at 12 MP, on a pool of 2 processes (the worker's default concurrency), next to
     the naive use of face_recognition in the same pool: `load_image_file` + `face_locations`
     + `face_encodings` at full resolution. Faces found per fixture are printed for both.
  2. subject: 1,500 distinct 12 MP photos (fixtures with random crops, light and scale) put
     into one subject as the API stores them, `photos.analyze` sent for each, and a real
     worker (`lookalike worker`, 2 processes, SQLite + filesystem queue) started: time until
     every photo is analysed and the subject review has run.
  3. report: GET /v1/subjects/{id}/report on that subject, median of 5.

    .venv/bin/python bench/analysis.py [--photos 1500] [--skip-subject] [--skip-rate]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "analysis"
FIXTURES = ROOT / "tests" / "fixtures"
NAMES = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_rgba.png",
    "biden.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "chelsea.png",
    "coffee.png",
]
MEGAPIXELS = 12e6


def _to_12mp(img, quality: int = 95) -> bytes:  # noqa: ANN001
    from PIL import Image

    factor = math.sqrt(MEGAPIXELS / (img.width * img.height))
    big = img.convert("RGB").resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_fixture_set() -> list[Path]:
    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in NAMES:
        path = OUT / f"{Path(name).stem}_12mp.jpg"
        if not path.exists():
            path.write_bytes(_to_12mp(Image.open(FIXTURES / name)))
        paths.append(path)
    return paths


def _variant(index: int) -> Path:
    """Photo `index` of the big subject: a fixture face, cropped, relit and scaled at random."""
    from PIL import Image, ImageEnhance

    path = OUT / "subject" / f"{index:05d}.jpg"
    if path.exists():
        return path
    rng = random.Random(index)
    name = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"][0 if index % 50 == 49 else rng.randrange(3)]
    if index % 50 == 49:
        name = "biden.jpg"  # one photo in fifty is someone else
    img = Image.open(FIXTURES / name).convert("RGB")
    keep = rng.uniform(0.8, 1.0)
    w, h = round(img.width * keep), round(img.height * keep)
    x, y = rng.randrange(img.width - w + 1), rng.randrange(img.height - h + 1)
    img = ImageEnhance.Brightness(img.crop((x, y, x + w, y + h))).enhance(rng.uniform(0.75, 1.25))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_to_12mp(img, quality=rng.choice([90, 93, 95])))
    return path


def _ours(path: Path) -> tuple[int, float]:
    from worker.analysis.pipeline import analyze_image

    t0 = time.perf_counter()
    result = analyze_image(path.read_bytes())
    return result.face_count, time.perf_counter() - t0


def _naive(path: Path) -> tuple[int, float]:
    import face_recognition

    t0 = time.perf_counter()
    image = face_recognition.load_image_file(str(path))
    boxes = face_recognition.face_locations(image)
    face_recognition.face_encodings(image, boxes)
    return len(boxes), time.perf_counter() - t0


def _warm(_: int) -> None:
    import face_recognition  # noqa: F401

    from worker.analysis.faces import FaceModels

    FaceModels.get().load_all()


def measure_rate(paths: list[Path], processes: int, rounds: int) -> None:
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_warm, range(processes)))
        work = paths * rounds
        t0 = time.perf_counter()
        ours = list(pool.map(_ours, work))
        ours_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = list(pool.map(_naive, paths))
        naive_wall = time.perf_counter() - t0
    ours_rate = len(work) / ours_wall
    naive_rate = len(paths) / naive_wall
    print(f"\n12 MP photos analysed per second, {processes} processes ({len(work)} photos, {len(paths)} for naive):")
    ours_each = statistics.median(t for _, t in ours)
    naive_each = statistics.median(t for _, t in naive)
    print(f"  lookalike analyze_image     {ours_rate:6.2f} photos/s  (median {ours_each:.3f} s each)")
    print(f"  naive face_recognition      {naive_rate:6.3f} photos/s  (median {naive_each:.2f} s each)")
    print(f"  speed-up                    {ours_rate / naive_rate:6.1f}x")
    print("  faces found per fixture (lookalike / naive):")
    for path, (n_ours, _), (n_naive, _) in zip(paths, ours[: len(paths)], naive, strict=True):
        flag = "" if n_ours >= n_naive else "   <-- lost"
        print(f"    {path.name:32s} {n_ours} / {n_naive}{flag}")


@contextlib.contextmanager
def landed_cascade() -> Iterator[None]:
    """The detection cascade as it landed before issue 13: no turned copies, the CNN at 480 px."""
    from worker.analysis import faces

    saved = faces.ROTATIONS, faces.CNN_SIDE
    faces.ROTATIONS, faces.CNN_SIDE = (), 480
    try:
        yield
    finally:
        faces.ROTATIONS, faces.CNN_SIDE = saved


def _no_face_seconds(data: bytes) -> tuple[float, int]:
    from worker.analysis.pipeline import analyze_image

    times, found = [], 0
    for _ in range(5):
        t0 = time.perf_counter()
        found = analyze_image(data).face_count
        times.append(time.perf_counter() - t0)
    return statistics.median(times), found


def measure_no_face(paths: list[Path]) -> None:
    """A 12 MP photo without a face runs every stage: its time now and with the landed cascade; faces found by both."""
    import numpy as np
    from PIL import Image

    from worker.analysis.faces import find_faces

    _warm(0)
    print("\nphotos without a face, one process, median of 5 (target < 0.5 s):")
    for path in paths:
        if path.name.startswith(("chelsea", "coffee")):
            now, found_now = _no_face_seconds(path.read_bytes())
            with landed_cascade():
                then, found_then = _no_face_seconds(path.read_bytes())
            print(f"  {path.name:24s} now {now:.3f} s ({found_now} faces), landed cascade {then:.3f} s ({found_then})")
    print("  faces found on the fixtures and on copies tilted 55 degrees (now / landed cascade):")
    for path in paths:
        img = Image.open(path)
        img.draft("RGB", (img.width // 2, img.height // 2))  # as analysis decodes it
        img = img.convert("RGB")
        for angle in (0, 55):
            rgb = np.asarray(img.rotate(angle, expand=True, fillcolor="white") if angle else img)
            now = len(find_faces(rgb))
            with landed_cascade():
                then = len(find_faces(rgb))
            flag = "" if now >= then else "   <-- lost"
            print(f"    {path.name + (f' @{angle}' if angle else ''):32s} {now} / {then}{flag}")


def measure_subject(count: int) -> None:
    import httpx  # noqa: F401  (TestClient needs it)
    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    with ProcessPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        paths = list(pool.map(_variant, range(count), chunksize=16))
        print(f"\n{count} photos of 12 MP ready in bench/out/analysis/subject ({time.perf_counter() - t0:.0f} s)")
        # The baseline: analyze_image alone on 200 of the same photos, on the same 2 processes, warm.
        list(pool.map(_warm, range(2)))
        list(pool.map(_ours, paths[:10]))
        t0 = time.perf_counter()
        list(pool.map(_ours, paths[10:210]))
        plain = 200 / (time.perf_counter() - t0)

    data_dir = Path(tempfile.mkdtemp(prefix="lookalike-bench-"))
    env = {**os.environ, "LOOKALIKE_DATA_DIR": str(data_dir), "LOOKALIKE_LOG_LEVEL": "warning"}
    os.environ.update({"LOOKALIKE_DATA_DIR": str(data_dir)})
    from app.core.db import migrate, session_factory, session_scope
    from app.core.ids import new_id
    from app.core.keys import photo_key
    from app.core.queue import ANALYZE_PHOTO, send
    from app.core.settings import get_settings
    from app.core.storage import get_storage
    from app.db import Photo, PhotoStatus, Subject
    from app.db.base import utcnow
    from app.main import create_app
    from app.users.service import create_user

    settings = get_settings()
    migrate(settings.resolved_database_url)
    storage = get_storage()
    storage.ensure()
    sessions = session_factory(settings)
    with session_scope(sessions) as session:
        user, key = create_user(session, email="bench@example.com")
        subject = Subject(user_id=user.id, name="Bench", class_word="man", consent_at=utcnow(), consent_version="test")
        session.add(subject)
        session.flush()
        ids = []
        for path in paths:
            data = path.read_bytes()
            photo = Photo(
                id=new_id(),
                user_id=user.id,
                subject_id=subject.id,
                filename=path.name,
                source_format="JPEG",
                stored_ext="jpg",
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                reasons=[],
            )
            storage.put(photo_key(user.id, subject.id, photo.id, "original", "jpg"), data)
            session.add(photo)
            ids.append(str(photo.id))
        subject_id, user_key = subject.id, key
    for photo_id in ids:
        send(ANALYZE_PHOTO, photo_id)
    print(f"stored and queued; starting `lookalike worker --concurrency 2` on {data_dir}")

    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--queues", "cpu", "--concurrency", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.perf_counter()
    try:
        while True:
            time.sleep(0.5)
            with session_scope(sessions) as session:
                pending = session.scalar(
                    select(func.count()).where(Photo.subject_id == subject_id, Photo.status == PhotoStatus.pending)
                )
                last = session.scalar(select(func.max(Photo.analyzed_at)).where(Photo.subject_id == subject_id))
                reviewed = session.scalar(select(Subject.reviewed_at).where(Subject.id == subject_id))
            if not pending and reviewed is not None and last is not None and reviewed >= last:
                break
            if worker.poll() is not None:
                raise SystemExit("the worker exited")
        elapsed = time.perf_counter() - t0
    finally:
        worker.terminate()
        worker.wait(30)
    rate = count / elapsed
    print(f"  all {count} analysed and reviewed in {elapsed:.1f} s ({rate:.2f} photos/s end to end; target < 180 s)")
    print(f"  that is {rate / plain:.0%} of the plain analyze_image rate on the same photos ({plain:.2f} photos/s)")

    app = create_app(settings)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {user_key}"}
        times, body = [], {}
        for _ in range(5):
            t1 = time.perf_counter()
            response = client.get(f"/v1/subjects/{subject_id}/report", headers=headers)
            times.append(time.perf_counter() - t1)
            body = response.json()
    print(
        f"  GET report: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms (target < 2 s)"
    )
    print(f"  report: photos={body['photos']} ready={body['ready_to_train']}")
    print(f"          rejected={body['rejected_by_reason']} by_shot={body['by_shot']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=4, help="passes over the fixtures for the rate")
    parser.add_argument("--skip-subject", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit}, {os.cpu_count()} CPUs")
    paths = make_fixture_set()
    if not args.skip_rate:
        measure_rate(paths, processes=2, rounds=args.rounds)
        measure_no_face(paths)
    if not args.skip_subject:
        measure_subject(args.photos)


if __name__ == "__main__":
    main()
