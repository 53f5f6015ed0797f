"""Hostile uploads too big to commit (or trivially derived): each built from a few bytes or a stream of zeros.

The committed ones are in `files/` (see README.md there). Nothing here is executable: the payloads are
marker strings, so that a test can check none of them survives in what is stored.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib

from PIL import Image

from tests.helpers import jpeg_bytes, png_header_only, zip_bytes

PAYLOAD = b"lookalike-hostile-payload"
MiB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_chunk(extra: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 96), (120, 80, 40)).save(out, "PNG")
    png = out.getvalue()
    return png[:33] + extra + png[33:]  # right after IHDR


def photo(seed: int) -> bytes:
    """A good JPEG, different for each seed (the upload path refuses byte-identical files as duplicates)."""
    return jpeg_bytes(96 + seed, 96, color=(seed * 37 % 256, seed * 91 % 256, 128))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims `width` x `height` pixels."""
    data = bytearray(jpeg_bytes(96, 96))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A WebP whose extended header (VP8X) claims a canvas of `width` x `height` pixels."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "WEBP", lossless=True)
    vp8l = out.getvalue()[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_claiming(width: int, height: int) -> bytes:
    frame = b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + frame


def png_text_bomb(kind: bytes) -> bytes:
    """A PNG with a compressed text or ICC chunk that inflates to 32 MiB of zeros."""
    head = b"Comment\x00\x00" if kind == b"zTXt" else b"icc\x00\x00"
    return _png_with_chunk(_chunk(kind, head + zlib.compress(bytes(32 * MiB), 9)))


def png_pixel_bomb(side: int) -> bytes:
    """A real `side` x `side` PNG (every row black), a few hundred KB that decode to side*side*3 bytes."""
    row = b"\x00" + bytes(side * 3)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_header_only(side, side)[:33] + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def zip_streamed(entries: dict[str, int]) -> bytes:
    """A zip of entries of that many zero bytes each, written in chunks (never the whole entry in memory)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, size in entries.items():
            with archive.open(name, "w", force_zip64=size > 2**31) as member:
                for start in range(0, size, MiB):
                    member.write(bytes(min(MiB, size - start)))
    return out.getvalue()


def zip_nested(depth: int) -> bytes:
    data = zip_bytes({"face.jpg": jpeg_bytes()})
    for level in range(depth):
        data = zip_bytes({f"level{level}.zip": data})
    return data


def zip_lying_sizes(size: int) -> bytes:
    """One entry of `size` zeros whose headers both claim 100 bytes."""
    archive = zip_streamed({"big.jpg": size})
    return archive.replace(size.to_bytes(4, "little"), (100).to_bytes(4, "little"))


def zip_overlapping(count: int, size: int) -> bytes:
    """`count` directory entries that all point at the same compressed data: each unpacks it again."""
    data = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = data.compress(bytes(size)) + data.flush()
    crc = zlib.crc32(bytes(size))
    name = b"a.jpg"
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(packed), size, len(name), 0)
    entry = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(packed), size, len(name), 0, 0, 0, 0, 0, 0
    )
    central = (entry + name) * count
    body = local + name + packed
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
    return body + central + end


def zip_flagged(data: bytes, flag: int) -> bytes:
    """The zip with the general-purpose `flag` bit set on every entry (0x1: encrypted, 0x800: UTF-8 names)."""
    out = bytearray(data)
    for magic, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := out.find(magic, start)) >= 0:
            bits = struct.unpack_from("<H", out, start + offset)[0] | flag
            struct.pack_into("<H", out, start + offset, bits)
            start += 4
    return bytes(out)


def zip_raw_names(entries: dict[bytes, bytes]) -> bytes:
    """A zip whose names are raw bytes marked as UTF-8 (bypassing zipfile's own encoding)."""
    placeholders = {f"{i:0{len(name)}d}": name for i, name in enumerate(entries)}  # same length, so offsets hold
    data = zip_bytes({p: entries[n] for p, n in placeholders.items()}, compression=zipfile.ZIP_STORED)
    for placeholder, name in placeholders.items():
        data = data.replace(placeholder.encode(), name)
    return zip_flagged(data, 0x800)


def zip_many_entries(count: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(zipfile.ZipInfo(f"{index}.txt"), b"")
    return out.getvalue()


def zip_duplicate_names() -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate: that is the point
        archive.writestr("a.jpg", jpeg_bytes(color=(10, 20, 30)))
        archive.writestr("a.jpg", jpeg_bytes(color=(200, 20, 30)))
        archive.writestr("b.jpg", photo(99))
        archive.writestr("b.jpg", photo(99))
    return out.getvalue()


def multipart(field: str, filename: bytes, data: bytes, content_type: bytes = b"image/jpeg") -> tuple[bytes, str]:
    """A multipart body written by hand, so that the file name can hold bytes clients would escape (NUL)."""
    boundary = b"hostileboundary7a1c"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="' + field.encode() + b'"; filename="' + filename + b'"\r\n'
        b"Content-Type: " + content_type + b"\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"
    )
    return body, f"multipart/form-data; boundary={boundary.decode()}"
