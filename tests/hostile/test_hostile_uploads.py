"""The hostile-file corpus, run through `POST /v1/subjects/{id}/photos` as a user would send it.

Every file is either refused with a stable reason code and a clear message, or (a harmless oddity,
a polyglot that is a valid image) accepted as a re-encoded image that carries none of its payload.
Never a 5xx; a good photo in the same request is accepted; photos stored before stay intact; the
bombs are stopped by the limits in the settings, with the memory they take bounded by those limits.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import fixture_bytes, jpeg_bytes, list_all_photos, png_header_only, zip_bytes
from tests.hostile import builders as b

CORPUS = Path(__file__).parent / "files"
ACCEPT = "accepted"
NOT_AN_IMAGE = {"not_an_image", "unsupported_format", "corrupt_image"}
TOO_BIG = {"image_too_large"}

# Committed files: what each must come to. A new file in files/ must be added here.
COMMITTED: dict[str, str | set[str]] = {
    "polyglot_jpeg_html.jpg": ACCEPT,
    "polyglot_jpeg_php_comment.jpg": ACCEPT,
    "polyglot_png_html.png": ACCEPT,
    "polyglot_gif_js.jpg": NOT_AN_IMAGE,
    "polyglot_jpeg_soi_html.jpg": {"corrupt_image"},
    "truncated.jpg": {"corrupt_image"},
    "truncated.png": {"corrupt_image"},
    "truncated.webp": {"corrupt_image"},
    "truncated.heic": NOT_AN_IMAGE,
    "bad_crc_ihdr.png": NOT_AN_IMAGE,
    "bad_idat.png": {"corrupt_image"},
    "heic_ftyp_garbage.heic": NOT_AN_IMAGE,
    "webp_riff_garbage.webp": NOT_AN_IMAGE,
    "gif_as.jpg": {"unsupported_format"},
    "tiff_as.jpg": {"unsupported_format"},
    "bmp_as.jpg": {"unsupported_format"},
    "svg_script_as.jpg": {"not_an_image"},
    "html_as.jpg": {"not_an_image"},
    "php_as.jpg": {"not_an_image"},
    "pdf_as.jpg": {"not_an_image"},
    "elf_as.jpg": {"not_an_image"},
    "cmyk.jpg": ACCEPT,
    "sixteen_bit.png": ACCEPT,
    "palette_transparent.png": ACCEPT,
    "heic_ok.heic": ACCEPT,
    "webp_ok.webp": ACCEPT,
}

LONG = "a" * 10_000 + ".jpg"

# Built ones (name, bytes-maker, expected), run against the default limits. A zip's expectation is
# the code of the archive or of each of its entries; ACCEPT means at least one photo from it.
BUILT: list[tuple[str, Callable[[], bytes], str | set[str]]] = [
    ("png_100k_by_100k.png", lambda: png_header_only(100_000, 100_000), TOO_BIG),
    ("webp_100k_by_100k.webp", lambda: b.webp_claiming(100_000, 100_000), TOO_BIG | NOT_AN_IMAGE),
    ("jpeg_65k_by_65k.jpg", lambda: b.jpeg_claiming(65_500, 65_500), TOO_BIG),
    ("gif_65k_by_65k.jpg", lambda: b.gif_claiming(65_535, 65_535), TOO_BIG | {"unsupported_format"}),
    ("ztxt_bomb.png", lambda: b.png_text_bomb(b"zTXt"), {"corrupt_image"}),
    ("iccp_bomb.png", lambda: b.png_text_bomb(b"iCCP"), {"corrupt_image"}),
    ("polyglot_jpeg_zip.jpg", lambda: b.photo(1) + zip_bytes({"shell.php": b.PAYLOAD}), ACCEPT),
    ("nested.zip", lambda: b.zip_nested(3), {"nested_archive"}),
    ("disguised_nested.zip", lambda: zip_bytes({"a.jpg": b.photo(2), "b.jpg": b.zip_nested(1)}), {"nested_archive"}),
    ("dotdot.zip", lambda: zip_bytes({"../../etc/cron.d/x.jpg": b.photo(3)}), {"unsafe_archive"}),
    ("absolute.zip", lambda: zip_bytes({"/etc/passwd.jpg": b.photo(4)}), {"unsafe_archive"}),
    ("backslash_dotdot.zip", lambda: zip_bytes({"..\\..\\x.jpg": b.photo(5)}), {"unsafe_archive"}),
    ("drive.zip", lambda: zip_bytes({"C:\\x.jpg": b.photo(6)}), {"unsafe_archive"}),
    ("backslash_folder.zip", lambda: zip_bytes({"dir\\a.jpg": b.photo(7)}), ACCEPT),
    ("symlink.zip", lambda: zip_bytes({"a.jpg": b.photo(8)}, symlinks={"b.jpg": "/etc/passwd"}), {"unsafe_archive"}),
    ("duplicates.zip", b.zip_duplicate_names, ACCEPT),
    ("encrypted.zip", lambda: b.zip_flagged(zip_bytes({"a.jpg": b.photo(9)}), 0x1), {"encrypted_archive"}),
    ("many_entries.zip", lambda: b.zip_many_entries(100_000), {"archive_too_many_entries"}),
    ("long_name.zip", lambda: zip_bytes({LONG: b.photo(10)}), {"name_too_long"}),
    ("rtl.zip", lambda: zip_bytes({"photo\u202egpj.exe": b.photo(11), "фото 写真.jpg": b.photo(12)}), ACCEPT),
    ("bad_utf8_name.zip", lambda: b.zip_raw_names({b"\xff\xfe.jpg": b.photo(13)}), {"invalid_archive"}),
    ("nul_name.zip", lambda: b.zip_raw_names({b"a\x00b.jpg": b.photo(14)}), ACCEPT),
    ("lying_sizes.zip", lambda: b.zip_lying_sizes(8 * b.MiB), {"corrupt_archive_entry", "file_too_large"}),
    ("zero_bomb.zip", lambda: b.zip_streamed({"zeros.jpg": 64 * b.MiB}), {"file_too_large"}),
    ("overlapping.zip", lambda: b.zip_overlapping(40, 1024 * 1024), {"not_an_image", "duplicate_file"}),
    ("empty.zip", lambda: b"PK\x05\x06" + bytes(18), {"no_files"}),
    ("captions.zip", lambda: zip_bytes({"a.jpg": b.photo(15), "a.txt": bytes(range(256)) * 64}), ACCEPT),
    ("huge_caption.zip", lambda: zip_bytes({"a.jpg": b.photo(16), "a.txt": b"word " * 2_000_000}), ACCEPT),
]


def outcome(response: Any) -> tuple[list[dict], list[tuple[str, str]]]:
    """(photos accepted, [(filename, code)] rejected), whether the refusals come in a 202 or as the error."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 202:
        rejected = body["rejected"]
        photos = body["photos"]
    else:
        assert 400 <= response.status_code < 500, response.text
        error = body["error"]
        assert error["code"] and error["message"] and error["hint"], body
        rejected = error.get("rejected") or [{"filename": None, "error": error}]
        photos = []
    for item in rejected:
        assert item["error"]["code"] and item["error"]["message"] and item["error"]["hint"], item
    return photos, [(r["filename"], r["error"]["code"]) for r in rejected]


def _upload(client: TestClient, account: Any, subject_id: str, files: list[tuple[str, bytes]]) -> Any:
    return client.post(
        f"/v1/subjects/{subject_id}/photos", files=[("files", f) for f in files], headers=account.headers
    )


def _stored_originals(storage: Any, account: Any) -> dict[str, bytes]:
    return {k: storage.get(k) for k in storage.list(f"users/{account.id}/") if "/original." in k}


def _check(name: str, expected: str | set[str], photos: list[dict], rejected: list[tuple[str, str]]) -> None:
    mine = [code for filename, code in rejected if filename is None or filename.startswith(name)]
    if expected == ACCEPT:
        assert any(p["filename"].startswith(name) for p in photos), (name, photos, rejected)
    else:
        assert mine and set(mine) <= expected, (name, mine)
        assert not any(p["filename"].startswith(name) for p in photos), (name, photos)


def _assert_no_payload(storage: Any, account: Any) -> None:
    for key, data in _stored_originals(storage, account).items():
        assert b.PAYLOAD not in data and b"<?php" not in data and b"<script" not in data and b"PK\x03\x04" not in data
        assert data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n", key


def test_every_committed_file_has_an_expectation() -> None:
    """A file added to the corpus without saying what it must come to fails here."""
    assert sorted(p.name for p in CORPUS.iterdir() if p.name != "README.md") == sorted(COMMITTED)
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 300_000


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_file_alone(client, account, subject, storage, name) -> None:
    """Each committed file alone: refused with its reason, or accepted re-encoded without its payload."""
    photos, rejected = outcome(_upload(client, account, subject["id"], [(name, (CORPUS / name).read_bytes())]))
    _check(name, COMMITTED[name], photos, rejected)
    _assert_no_payload(storage, account)
    if COMMITTED[name] != ACCEPT:
        assert storage.list(f"users/{account.id}/") == []


@pytest.mark.parametrize(("name", "make", "expected"), BUILT, ids=[n for n, _, _ in BUILT])
def test_built_file_alone(client, account, subject, storage, name, make, expected) -> None:
    """Each built file (bombs, zip tricks) alone, against the default limits."""
    photos, rejected = outcome(_upload(client, account, subject["id"], [(name, make())]))
    if expected == {"no_files"}:
        assert [code for _, code in rejected] == ["no_files"]
        return
    _check(name, expected, photos, rejected)
    _assert_no_payload(storage, account)
    for photo in photos:  # names are kept as sent, within the column's limit, never with NUL
        assert len(photo["filename"]) <= 1024 and "\x00" not in photo["filename"]
        assert photo["caption"] is None or (len(photo["caption"]) <= 1000 and "\x00" not in photo["caption"])


def test_captions_that_are_binary_or_huge_are_cleaned(client, account, subject) -> None:
    """A binary caption keeps its text without control characters; a huge one is cut at the limit."""
    photos, _ = outcome(
        _upload(
            client,
            account,
            subject["id"],
            [
                ("bin.jpg", jpeg_bytes(color=(1, 2, 3))),
                ("bin.txt", bytes(range(256)) * 64),
                ("big.jpg", jpeg_bytes(color=(3, 2, 1))),
                ("big.txt", b"word " * 2_000_000),
            ],
        )
    )
    captions = {p["filename"]: p["caption"] for p in photos}
    assert set(captions) == {"bin.jpg", "big.jpg"}
    assert captions["bin.jpg"] and not any(ord(c) < 32 and c not in "\n\t" for c in captions["bin.jpg"])
    assert len(captions["big.jpg"]) == 1000 and captions["big.jpg"].startswith("word word")


def test_nul_filled_file_name(client, account, subject) -> None:
    """A part whose file name is NUL bytes is taken by its content, under a cleaned name."""
    body, content_type = b.multipart("files", b"\x00" * 32 + b".jpg", jpeg_bytes())
    response = client.post(
        f"/v1/subjects/{subject['id']}/photos", content=body, headers=account.headers | {"Content-Type": content_type}
    )
    photos, rejected = outcome(response)
    assert rejected == [] and len(photos) == 1
    assert "\x00" not in photos[0]["filename"] and photos[0]["filename"]


def test_everything_at_once_with_a_good_photo(client, account, subject, storage) -> None:
    """The whole corpus in one request beside a good photo: the good one is accepted, each file as alone,
    and the photos stored before are untouched."""
    keep = outcome(_upload(client, account, subject["id"], [("keep.jpg", fixture_bytes("obama.jpg"))]))[0]
    before = _stored_originals(storage, account)
    assert len(keep) == 1 and len(before) == 1

    files = [(name, (CORPUS / name).read_bytes()) for name in sorted(COMMITTED)]
    files += [(name, make()) for name, make, expected in BUILT if expected != {"no_files"}]
    files.append(("good.jpg", fixture_bytes("obama2.jpg")))
    photos, rejected = outcome(_upload(client, account, subject["id"], files))

    assert any(p["filename"] == "good.jpg" for p in photos)
    for name, expected in COMMITTED.items():
        _check(name, expected, photos, rejected)
    for name, _, expected in BUILT:
        if expected != {"no_files"}:
            _check(name, expected, photos, rejected)
    after = _stored_originals(storage, account)
    assert {k: after[k] for k in before} == before
    _assert_no_payload(storage, account)
    listed = {p["id"] for p in list_all_photos(client, account, subject["id"])}
    assert listed == {p["id"] for p in keep + photos}


@pytest.fixture
def limited(settings, make_account) -> Iterator[tuple[TestClient, Any, dict]]:
    """An app with small limits, sharing the database, storage and queue of the main one."""
    from app.main import create_app

    small = settings.model_copy(
        update={
            "max_file_bytes": 2 * b.MiB,
            "max_image_pixels": 4_000_000,
            "zip_max_entries": 50,
            "zip_max_uncompressed_bytes": 3 * b.MiB,
        }
    )
    with TestClient(create_app(small)) as client:
        account = make_account()
        subject = client.post("/v1/subjects", json={"name": "L", "consent": True}, headers=account.headers).json()
        yield client, account, subject


BOMBS: list[tuple[str, Callable[[], bytes], set[str]]] = [
    ("zeros.zip", lambda: b.zip_streamed({f"{i}.jpg": 32 * b.MiB for i in range(8)}), {"archive_too_large"}),
    ("one_big.zip", lambda: b.zip_streamed({"a.jpg": 256 * b.MiB}), {"file_too_large"}),
    ("overlapping.zip", lambda: b.zip_overlapping(1000, b.MiB), {"archive_too_large", "archive_too_many_entries"}),
    ("lying.zip", lambda: b.zip_lying_sizes(64 * b.MiB), {"corrupt_archive_entry", "file_too_large"}),
    ("pixels.png", lambda: b.png_pixel_bomb(9000), TOO_BIG),
    ("many.zip", lambda: b.zip_many_entries(100_000), {"archive_too_many_entries"}),
]


@pytest.mark.parametrize(("name", "make", "expected"), BOMBS, ids=[n for n, _, _ in BOMBS])
def test_bombs_are_stopped_within_the_limits(limited, storage, name, make, expected) -> None:
    """A gigabyte of zeros, a thousand views of one entry, a 81-megapixel PNG: refused, and the bytes the
    upload path holds stay within a small multiple of the limits (2 MiB a file, 3 MiB an archive)."""
    client, account, subject = limited
    data = make()
    assert len(data) < 12 * b.MiB
    tracemalloc.start()
    try:
        response = _upload(client, account, subject["id"], [(name, data), ("good.jpg", jpeg_bytes())])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    photos, rejected = outcome(response)
    assert [p["filename"] for p in photos] == ["good.jpg"]
    _check(name, expected, photos, rejected)
    # Python-level allocations only (Pillow's pixel buffers are not traced; max_image_pixels bounds those).
    # The request body is copied a few times on its way in; past that, the limits (5 MiB) and some slack.
    assert peak < 3 * len(data) + 8 * b.MiB, peak
    assert len(_stored_originals(storage, account)) == 1
