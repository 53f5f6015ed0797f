"""Photo uploads and edits.

An upload is expanded (archives unpacked, captions paired), checked for exact
duplicates by hash, then decoded, cleaned and stored on a thread pool, one image per
thread; the rows are added in the caller's transaction and `photos.analyze` is sent
for each once it commits. Blobs written for a transaction that rolls back are removed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass

from fastapi import UploadFile
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.core.db import flush_deleted
from app.core.errors import BadRequest, NotFound
from app.core.ids import new_id
from app.core.keys import generation_prefix, photo_key, photo_prefix
from app.core.pagination import keyset
from app.core.queue import ANALYZE_PHOTO, enqueue
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.tx import after_commit, after_rollback
from app.db import Generation, Photo, Subject, User
from app.photos.ingest import (
    Candidate,
    Prepared,
    Rejected,
    Rejection,
    extract_zip,
    is_zip,
    pair_captions,
    prepare_image,
    too_big,
)
from app.photos.schemas import PhotoRead, PhotoUpdate, RejectedFile, UploadResult
from app.privacy.erase import started_from
from app.subjects.review import review_subject

log = logging.getLogger(__name__)

VARIANTS = ("original", "crop", "thumb")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_filename(name: str | None) -> str:
    """The name as the user gave it, minus control characters and any client-side folder."""
    name = _CONTROL.sub("", (name or "").replace("\\", "/")).rsplit("/", 1)[-1].strip()
    return name[:255] or "upload"


@dataclass
class _Stored:
    photo_id: uuid.UUID
    prepared: Prepared
    keys: list[str]


def _expand(uploads: list[UploadFile], settings: Settings) -> tuple[list[tuple[str, bytes]], list[Rejection]]:
    """Every file of the request, archives unpacked; unsafe archives rejected whole."""
    files: list[tuple[str, bytes]] = []
    rejected: list[Rejection] = []
    for upload in uploads:
        name = clean_filename(upload.filename)
        head = upload.file.read(4)
        upload.file.seek(0)
        if is_zip(head):
            try:
                inner, bad = extract_zip(name, upload.file, settings)
            except Rejected as exc:
                rejected.append(exc.for_file(name))
                continue
            files.extend(inner)
            rejected.extend(bad)
            continue
        size = upload.size if upload.size is not None else len(upload.file.read())
        upload.file.seek(0)
        if size > settings.max_file_bytes:
            rejected.append(too_big(name, settings).for_file(name))
            continue
        files.append((name, upload.file.read()))
    return files, rejected


def upload_photos(
    session: Session,
    *,
    user: User,
    subject: Subject,
    uploads: list[UploadFile],
    settings: Settings,
    storage: Storage,
    executor: Executor,
) -> UploadResult:
    """Accept what is good, reject the rest with reasons; raise only when the request holds no file at all."""
    if not uploads:
        raise BadRequest(
            "The upload holds no files.",
            code="no_files",
            hint="Send photos or zip archives in the multipart field `files`.",
        )
    files, rejected = _expand(uploads, settings)
    candidates, orphan_captions = pair_captions(files, settings)
    for stem in orphan_captions:
        rejected.append(
            Rejection(
                f"{stem}.txt",
                "caption_without_image",
                f"{stem}.txt has no photo with the same name next to it.",
                "Name each caption like its photo: IMG_001.jpg and IMG_001.txt.",
            )
        )

    candidates, dup_rejections = _drop_duplicates(session, subject, candidates)
    rejected.extend(dup_rejections)
    candidates, full = _within_capacity(session, subject, candidates, settings)
    rejected.extend(full)

    stored: list[_Stored] = []
    ids = [new_id() for _ in candidates]  # minted here so that id order is upload order
    results = list(
        executor.map(lambda c, i: _prepare_and_store(c, i, user, subject, settings, storage), candidates, ids)
    )
    for result in results:
        if isinstance(result, Rejection):
            rejected.append(result)
        else:
            stored.append(result)

    all_keys = [key for item in stored for key in item.keys]
    after_rollback(session, lambda: _delete_keys(storage, all_keys))
    photos = []
    for item in stored:
        p = item.prepared
        photo = Photo(
            id=item.photo_id,
            user_id=user.id,
            subject_id=subject.id,
            filename=p.filename,
            source_format=p.source_format,
            stored_ext=p.original_ext,
            size_bytes=p.size_bytes,
            sha256=p.sha256,
            caption=p.caption,
            reasons=[],
        )
        session.add(photo)
        photos.append(photo)
        enqueue(session, ANALYZE_PHOTO, str(photo.id))
    session.flush()

    rank = {name: i for i, name in enumerate(_appearance_order(uploads, files))}
    rejected.sort(key=lambda r: rank.get(r.filename, len(rank)))
    if not photos and not rejected:
        raise BadRequest(
            "The upload holds no photos.",
            code="no_files",
            hint="Send JPEG, PNG, WebP or HEIC photos, or zip archives of them.",
        )
    # One answer shape whatever the outcome: a request whose every file is refused is still a 202,
    # with `photos` empty and each file's reason in `rejected` (nothing was stored, nothing changed).
    return UploadResult(photos=[to_read(p) for p in photos], rejected=[RejectedFile(**r.as_dict()) for r in rejected])


def _appearance_order(uploads: list[UploadFile], files: list[tuple[str, bytes]]) -> list[str]:
    """Names in the order the user sent them: each upload, with an archive's entries right after it."""
    names: list[str] = []
    for upload in uploads:
        name = clean_filename(upload.filename)
        names.append(name)
        names.extend(f for f, _ in files if f.startswith(name + "/"))
    return names


def _drop_duplicates(
    session: Session, subject: Subject, candidates: list[Candidate]
) -> tuple[list[Candidate], list[Rejection]]:
    """Byte-identical files already in the subject, or twice in this upload, are rejected."""
    known = dict(session.execute(select(Photo.sha256, Photo.id).where(Photo.subject_id == subject.id)).all())
    seen: dict[str, str] = {}
    keep, rejected = [], []
    for cand in candidates:
        digest = cand.sha256 = hashlib.sha256(cand.data).hexdigest()
        if digest in known:
            rejected.append(
                Rejection(
                    cand.filename,
                    "duplicate_file",
                    f"{cand.filename} is already uploaded as photo {known[digest]}.",
                    "Nothing to do: each photo is kept once.",
                )
            )
        elif digest in seen:
            rejected.append(
                Rejection(
                    cand.filename,
                    "duplicate_file",
                    f"{cand.filename} is the same file as {seen[digest]}.",
                    "Nothing to do: each photo is kept once.",
                )
            )
        else:
            seen[digest] = cand.filename
            keep.append(cand)
    return keep, rejected


def _within_capacity(
    session: Session, subject: Subject, candidates: list[Candidate], settings: Settings
) -> tuple[list[Candidate], list[Rejection]]:
    have = session.scalar(select(func.count()).select_from(Photo).where(Photo.subject_id == subject.id)) or 0
    room = max(0, settings.max_photos_per_subject - have)
    over = [
        Rejection(
            c.filename,
            "subject_full",
            f"The subject already has {have} photos, the most one subject can hold is "
            f"{settings.max_photos_per_subject}.",
            "Delete photos you do not need, or use another subject.",
        )
        for c in candidates[room:]
    ]
    return candidates[:room], over


def _prepare_and_store(
    cand: Candidate, photo_id: uuid.UUID, user: User, subject: Subject, settings: Settings, storage: Storage
) -> _Stored | Rejection:
    try:
        prepared = prepare_image(cand, settings)
    except Rejected as exc:
        return exc.for_file(cand.filename)
    finally:
        cand.data = b""  # the raw bytes (with their metadata) are not needed any more
    original = photo_key(user.id, subject.id, photo_id, "original", prepared.original_ext)
    storage.put(original, prepared.original, content_type=prepared.original_type)
    return _Stored(photo_id, prepared, [original])


def _delete_keys(storage: Storage, keys: list[str]) -> None:
    for key in keys:
        storage.delete(key)


def photo_folder(photo: Photo) -> str:
    return photo_prefix(photo.user_id, photo.subject_id, photo.id)


def image_url(photo: Photo, variant: str) -> str:
    return f"/v1/subjects/{photo.subject_id}/photos/{photo.id}/image?variant={variant}"


def to_read(photo: Photo) -> PhotoRead:
    made = {"original": True, "thumb": photo.has_thumb, "crop": photo.has_crop}
    urls = {v: image_url(photo, v) for v in VARIANTS if made[v]}
    fields = {name: getattr(photo, name) for name in PhotoRead.model_fields if name != "urls"}
    return PhotoRead(**fields, urls=urls)


def get_photo(session: Session, *, subject: Subject, photo_id: uuid.UUID) -> Photo:
    photo = session.scalar(select(Photo).where(Photo.id == photo_id, Photo.subject_id == subject.id))
    if photo is None:
        raise NotFound(
            "No such photo in this subject.",
            code="photo_not_found",
            hint="List the subject's photos with GET /v1/subjects/{id}/photos.",
        )
    return photo


def list_photos(
    session: Session, *, subject: Subject, after: uuid.UUID | None, limit: int, status: str | None
) -> list[Photo]:
    query = keyset(select(Photo).where(Photo.subject_id == subject.id), Photo.id, after=after, limit=limit)
    if status is not None:
        query = query.where(Photo.status == status)
    return list(session.scalars(query))


def update_photo(session: Session, *, photo: Photo, data: PhotoUpdate, settings: Settings) -> Photo:
    """Edit the caption or the exclusion; excluding or including re-runs the selection."""
    fields = data.model_fields_set
    if "caption" in fields:
        photo.caption = (data.caption or "").strip() or None
    if "excluded" in fields and data.excluded is not None and data.excluded != photo.excluded:
        photo.excluded = data.excluded
        session.flush()
        review_subject(session, subject_id=photo.subject_id, settings=settings)
    session.flush()
    return photo


def delete_photo(session: Session, *, photo: Photo, storage: Storage, settings: Settings) -> None:
    """Delete the photo and the generations started from it (their start image is a copy of it); stored
    objects go once the deletion has committed. A generation still running finds its row gone at its
    next write, stops, and removes what it wrote (`worker.generation.tasks`)."""
    folder, user_id = photo_folder(photo), photo.user_id
    session.execute(delete(Photo).where(Photo.id == photo.id))
    # After the photo's row: a request copying the photo holds it locked (key share) until it commits.
    generations = started_from(session, [photo.id])
    if generations:
        session.execute(delete(Generation).where(Generation.id.in_(generations)))
    prefixes = [folder, *(generation_prefix(user_id, g) for g in generations)]
    review_subject(session, subject_id=photo.subject_id, settings=settings)
    engine = session.get_bind().engine

    def erase() -> None:
        for prefix in prefixes:
            storage.delete_prefix(prefix)
        flush_deleted(engine)  # the photo's analysis (captions, face encoding) out of SQLite's log

    after_commit(session, erase)


def image_key(photo: Photo, variant: str) -> str:
    """The storage key of a variant; NotFound if that variant does not exist (yet)."""
    if (variant == "crop" and not photo.has_crop) or (variant == "thumb" and not photo.has_thumb):
        raise NotFound(
            f"This photo has no {variant} yet.",
            code="variant_not_available",
            hint="Thumbnails and crops are made when the photo is analysed; the original is always there.",
        )
    ext = photo.stored_ext if variant == "original" else "jpg"
    return photo_key(photo.user_id, photo.subject_id, photo.id, variant, ext)
