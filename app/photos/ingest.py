"""Turning uploaded bytes into clean, stored photos.

Everything here is pure: bytes in, bytes or a Rejection out. Images are recognised by
their bytes (never by name or content type), bounded in size and pixels before they are
decoded, rotated upright from their EXIF orientation and re-encoded from pixels, so
that no EXIF, GPS, XMP or IPTC metadata survives in anything stored or served.
Archives are unpacked entry by entry with every limit counted on the bytes actually
read, not on what the archive's headers claim.
"""

from __future__ import annotations

import hashlib
import io
import re
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from app.core.settings import Settings

try:  # HEIC/HEIF from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a core dependency
    pass

# What Pillow calls the formats we accept. MPO is the multi-picture JPEG many phones write.
ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC"}
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
READ_CHUNK = 1024 * 1024
THUMB_QUALITY = 85
# A photo's name, archive path included, is stored in a column of this many characters.
MAX_NAME_CHARS = 1024
# The most one entry takes in a zip's directory (a long name and extras): zipfile parses the whole
# directory up front, one object per entry, so its size is bounded by this times the entry limit first.
ZIP_DIRECTORY_BYTES_PER_ENTRY = 46 + MAX_NAME_CHARS + 512
# Control characters (tab and newline apart) in a caption: binary junk, and NUL is refused by Postgres.
_CAPTION_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Rejection:
    """Why one file was not accepted, in words a user can act on."""

    filename: str
    code: str
    message: str
    hint: str | None = None

    def as_dict(self) -> dict:
        return {"filename": self.filename, "error": {"code": self.code, "message": self.message, "hint": self.hint}}


class Rejected(Exception):
    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def for_file(self, filename: str) -> Rejection:
        return Rejection(filename, self.code, self.message, self.hint)


@dataclass
class Candidate:
    """One image-to-be: its name as the user knows it, its bytes and an optional caption."""

    filename: str
    data: bytes
    caption: str | None = None
    sha256: str | None = None


@dataclass
class Prepared:
    """A decoded, upright, metadata-free image ready to store."""

    filename: str
    caption: str | None
    source_format: str
    sha256: str
    size_bytes: int
    original: bytes
    original_ext: str
    original_type: str


def allow_pillow_pixels(limit: int) -> None:
    """Raise Pillow's process-wide bomb guard to our limit if it is lower; never lower it.

    Our own check (settings.max_image_pixels) is the one users see; Pillow's guard stays as a
    second line, and is only moved so that it does not refuse images our limit allows.
    """
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


# --- upload expansion -------------------------------------------------------------------------


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


def _stem(name: str) -> str:
    path = PurePosixPath(name)
    return str(path.with_suffix("")) if path.suffix else str(path)


def _is_caption(name: str) -> bool:
    return name.lower().endswith(".txt")


def _decode_caption(data: bytes, settings: Settings) -> str | None:
    text = _CAPTION_JUNK.sub("", data.decode("utf-8", errors="replace")).strip()
    return text[: settings.max_caption_chars] or None


def pair_captions(items: list[tuple[str, bytes]], settings: Settings) -> tuple[list[Candidate], dict[str, str]]:
    """Split files into image candidates and `.txt` captions matched by the same name."""
    captions: dict[str, str] = {}
    images: list[tuple[str, bytes]] = []
    for name, data in items:
        if _is_caption(name):
            text = _decode_caption(data, settings)
            if text:
                captions[_stem(name)] = text
        else:
            images.append((name, data))
    candidates = [Candidate(name, data, captions.get(_stem(name))) for name, data in images]
    used = {_stem(c.filename) for c in candidates}
    return candidates, {k: v for k, v in captions.items() if k not in used}


def read_limited(stream: BinaryIO, limit: int) -> bytes | None:
    """Read at most `limit` bytes; None if the stream holds more."""
    chunks, total = [], 0
    while chunk := stream.read(min(READ_CHUNK, limit + 1 - total)):
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _unsafe_name(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    return any(part == ".." for part in name.replace("\\", "/").split("/"))


def _skipped_name(name: str) -> bool:
    parts = [p for p in name.split("/") if p]
    return not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def extract_zip(
    archive_name: str, stream: BinaryIO, settings: Settings
) -> tuple[list[tuple[str, bytes]], list[Rejection]]:
    """The files inside a zip, or Rejected for the whole archive if it is unsafe.

    Unsafe means: paths that escape the folder, symlinks, archives inside the archive,
    encryption, more entries or more uncompressed bytes than the limits. An entry over
    the per-file limit is rejected alone; the rest of the archive still counts.
    """
    _check_directory_size(archive_name, stream, settings)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Rejected(
            "invalid_archive",
            f"{archive_name} is not a readable zip archive ({exc}).",
            "Re-create the zip and upload it again.",
        ) from None

    files: list[tuple[str, bytes]] = []
    rejected: list[Rejection] = []
    entries = 0
    total = 0
    with archive:
        for info in archive.infolist():
            name = info.filename
            entries += 1
            if entries > settings.zip_max_entries:
                raise Rejected(
                    "archive_too_many_entries",
                    f"{archive_name} holds more than {settings.zip_max_entries} entries.",
                    "Split the photos over several smaller archives.",
                )
            if _unsafe_name(name):
                raise Rejected(
                    "unsafe_archive",
                    f"{archive_name} contains the path {name!r}, which points outside the archive.",
                    "Zip the photos from inside their folder, without absolute paths or '..'.",
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise Rejected(
                    "unsafe_archive",
                    f"{archive_name} contains a symbolic link ({name}).",
                    "Zip the photos themselves, not links to them.",
                )
            if info.is_dir() or _skipped_name(name):
                continue
            if info.flag_bits & 0x1:
                raise Rejected(
                    "encrypted_archive",
                    f"{archive_name} is password-protected.",
                    "Upload an archive without a password.",
                )
            if name.lower().endswith((".zip", ".jar")):
                raise Rejected(
                    "nested_archive",
                    f"{archive_name} contains another archive ({name}).",
                    "Unzip the inner archive and upload its photos directly.",
                )
            display = f"{archive_name}/{name}"
            if len(display) > MAX_NAME_CHARS:
                rejected.append(
                    Rejection(
                        display[:200] + "…",
                        "name_too_long",
                        f"{display[:200]}… has a path of {len(display)} characters, over {MAX_NAME_CHARS}.",
                        "Give the photo a shorter name, or keep it in a shallower folder of the archive.",
                    )
                )
                continue
            limit = min(settings.max_file_bytes, settings.zip_max_uncompressed_bytes - total)
            try:
                with archive.open(info) as member:
                    data = read_limited(member, limit)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                rejected.append(
                    Rejection(
                        display,
                        "corrupt_archive_entry",
                        f"{display} could not be unpacked ({exc}).",
                        "Re-create the archive.",
                    )
                )
                continue
            if data is None:
                if limit < settings.max_file_bytes:
                    raise Rejected(
                        "archive_too_large",
                        f"{archive_name} unpacks to more than {settings.zip_max_uncompressed_bytes} bytes.",
                        "Split the photos over several smaller archives.",
                    )
                total += settings.max_file_bytes
                rejected.append(too_big(display, settings).for_file(display))
                continue
            total += len(data)
            if is_zip(data[:4]):
                raise Rejected(
                    "nested_archive",
                    f"{archive_name} contains another archive ({name}).",
                    "Unzip the inner archive and upload its photos directly.",
                )
            files.append((name, data))
    return [(f"{archive_name}/{name}", data) for name, data in files], rejected


def _check_directory_size(archive_name: str, stream: BinaryIO, settings: Settings) -> None:
    """Refuse a zip whose directory lists more entries than allowed before zipfile parses all of it.

    zipfile builds one object per entry up front, so a directory of millions of tiny entries would
    take gigabytes before the entry limit is ever counted.
    """
    try:
        end = zipfile._EndRecData(stream)  # the end-of-directory record (Zip64 included), as zipfile reads it
    except (OSError, ValueError, struct.error):
        end = None
    finally:
        stream.seek(0)
    if not end:
        return  # not a readable zip: zipfile says so next
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > settings.zip_max_entries or size > settings.zip_max_entries * ZIP_DIRECTORY_BYTES_PER_ENTRY:
        raise Rejected(
            "archive_too_many_entries",
            f"{archive_name} lists more than {settings.zip_max_entries} entries.",
            "Split the photos over several smaller archives.",
        )


def _too_many_pixels(name: str, settings: Settings, size: str = "too many pixels") -> Rejected:
    limit = settings.max_image_pixels / 1_000_000
    return Rejected(
        "image_too_large",
        f"{name} is {size}, over the limit of {limit:g} megapixels.",
        "Resize the photo; 12 to 24 megapixels is plenty for training.",
    )


def _damaged(name: str, what: str, exc: Exception) -> Rejected:
    return Rejected("corrupt_image", f"{name} {what} ({exc}).", "Export the photo again from your camera or phone.")


def too_big(filename: str, settings: Settings) -> Rejected:
    mib = settings.max_file_bytes // (1024 * 1024)
    return Rejected(
        "file_too_large",
        f"{filename} is larger than the {mib} MiB limit for one file.",
        "Export the photo at a lower size or quality.",
    )


# --- one image ----------------------------------------------------------------------------------


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert pixels tagged with another colour profile to sRGB, so colours survive dropping the profile."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, dst, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # a broken profile: keep the pixels as they are


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def prepare_image(candidate: Candidate, settings: Settings) -> Prepared:
    """Validate and clean one image; raises Rejected with a reason a user understands."""
    data, name = candidate.data, candidate.filename
    if not data:
        raise Rejected("empty_file", f"{name} is empty.", "Upload the photo again.")
    if len(data) > settings.max_file_bytes:
        raise too_big(name, settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(name, settings) from None
    except UnidentifiedImageError:
        raise Rejected("not_an_image", f"{name} is not an image.", "Upload JPEG, PNG, WebP or HEIC photos.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _damaged(name, "could not be read as an image", exc) from None
    fmt = ACCEPTED_FORMATS.get(img.format or "")
    if fmt is None:
        raise Rejected(
            "unsupported_format",
            f"{name} is a {img.format} image, which is not supported.",
            "Convert it to JPEG, PNG, WebP or HEIC.",
        )
    width, height = img.size
    if width * height > settings.max_image_pixels:
        raise _too_many_pixels(name, settings, f"{width}x{height} pixels")
    if min(width, height) < settings.min_image_side:
        raise Rejected(
            "image_too_small",
            f"{name} is only {width}x{height} pixels.",
            f"Use photos at least {settings.min_image_side} pixels on each side; 1024 or more is best.",
        )
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no 36 MB copy for upright photos
    except (OSError, SyntaxError, ValueError) as exc:
        raise _damaged(name, "is truncated or damaged", exc) from None

    img = _to_srgb(img)
    if _has_alpha(img):
        original = _encode(_as_mode(img, "RGBA"), "PNG", compress_level=1)
        ext, ctype = "png", "image/png"
    else:
        original = _encode(_as_mode(img, "RGB"), "JPEG", quality=settings.jpeg_quality)
        ext, ctype = "jpg", "image/jpeg"
    return Prepared(
        filename=name,
        caption=candidate.caption,
        source_format=fmt,
        sha256=candidate.sha256 or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        original=original,
        original_ext=ext,
        original_type=ctype,
    )


def _as_mode(img: Image.Image, mode: str) -> Image.Image:
    return img if img.mode == mode else img.convert(mode)


def make_thumbnail(img: Image.Image, size: int) -> bytes:
    """A JPEG fitting in size x size, transparency flattened onto white."""
    scale = min(1.0, size / max(img.size))
    target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = img.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    if _has_alpha(small):
        small = small.convert("RGBA")
        small = Image.alpha_composite(Image.new("RGBA", small.size, (255, 255, 255, 255)), small)
    return _encode(_as_mode(small, "RGB"), "JPEG", quality=THUMB_QUALITY)


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    # Some encoders fall back to img.info (PNG copies its ICC profile from there): empty it so
    # that nothing but pixels is written.
    img.info = {}
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()
