"""The Storage contract, run against a local folder and a real S3-protocol server."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from app.core.storage import LocalStorage, ObjectNotFound, S3Storage, Storage, storage_from_url

INVALID_KEYS = ["../x", "/abs", "a//b", "a\\b", "a/./b", ""]
INVALID_PREFIXES = [k for k in INVALID_KEYS if k]


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def _raw_keys(store: S3Storage) -> list[str]:
    return sorted(o["Key"] for o in store.client.list_objects_v2(Bucket=store.bucket).get("Contents", []))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        made: Storage = LocalStorage(tmp_path / "outer" / "root")
    else:
        made = S3Storage(_bucket(), endpoint_url=request.getfixturevalue("s3_server"))
    made.ensure()
    return made


def test_put_get_roundtrip(store: Storage) -> None:
    """What is put is what is got, byte for byte."""
    data = os.urandom(3000)
    store.put("users/u/a.bin", data)
    assert store.get("users/u/a.bin") == data
    store.put("users/u/empty", b"")
    assert store.get("users/u/empty") == b""


def test_overwrite_replaces(store: Storage) -> None:
    """A second put at the same key replaces the object."""
    store.put("k/v", b"first version")
    store.put("k/v", b"second")
    assert store.get("k/v") == b"second"
    assert store.list("k/") == ["k/v"]


@pytest.mark.parametrize("key", ["missing", "nope/deeper/x.jpg"])
def test_get_missing_raises(store: Storage, key: str) -> None:
    """Reading or streaming an absent key raises ObjectNotFound (a KeyError) at call time."""
    with pytest.raises(ObjectNotFound):
        store.get(key)
    with pytest.raises(KeyError):
        store.get(key)
    with pytest.raises(ObjectNotFound):
        store.iter_chunks(key, chunk_size=16)


def test_get_folder_key_raises_not_found(store: Storage) -> None:
    """A key that is only a prefix of other objects is absent, not an OS error."""
    store.put("dir/file", b"x")
    with pytest.raises(ObjectNotFound):
        store.get("dir")
    with pytest.raises(ObjectNotFound):
        store.iter_chunks("dir")


def test_iter_chunks_streams_whole_object(store: Storage) -> None:
    """Chunks are bounded by chunk_size and join to the whole object."""
    data = os.urandom(10_000)
    store.put("big/blob", data)
    chunks = list(store.iter_chunks("big/blob", chunk_size=1024))
    assert b"".join(chunks) == data
    assert len(chunks) >= 10
    assert all(0 < len(c) <= 1024 for c in chunks)


def test_exists_and_delete(store: Storage) -> None:
    """exists is true for objects only; delete removes one object and absent ones are fine."""
    store.put("a/b/c", b"1")
    assert store.exists("a/b/c")
    assert not store.exists("a/b/d")
    assert not store.exists("a/b")
    store.put("x/1", b"1")
    store.put("x/2", b"2")
    store.delete("x/1")
    store.delete("x/1")
    store.delete("never/there")
    assert not store.exists("x/1")
    assert store.get("x/2") == b"2"


def test_delete_prefix_only_that_prefix(store: Storage) -> None:
    """delete_prefix removes what is under the prefix, counts it, and spares neighbours."""
    for key in ("users/1/a", "users/1/sub/b", "users/1/sub/deep/c", "users/10/a", "users/2/a"):
        store.put(key, key.encode())
    assert store.delete_prefix("users/1/") == 3
    assert store.list("users/") == ["users/10/a", "users/2/a"]
    assert store.delete_prefix("users/1/") == 0
    assert store.delete_prefix("nothing/here/") == 0


def test_list_sorted_and_prefix_filtered(store: Storage) -> None:
    """list returns sorted keys that start with the prefix, as plain string prefixes."""
    for key in ("b/2", "a/z", "b/1", "a/b/c", "ab/x", "b/10"):
        store.put(key, b"-")
    assert store.list("") == ["a/b/c", "a/z", "ab/x", "b/1", "b/10", "b/2"]
    assert store.list("a/") == ["a/b/c", "a/z"]
    assert store.list("a") == ["a/b/c", "a/z", "ab/x"]
    assert store.list("b/1") == ["b/1", "b/10"]
    assert store.list("c/") == []


def test_check_and_ensure(store: Storage) -> None:
    """check passes on a ready store, ensure is idempotent, and neither leaves objects behind."""
    store.ensure()
    store.check()
    store.check()
    assert store.list("") == []


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_rejected(store: Storage, key: str) -> None:
    """Every key-taking method refuses keys that could escape or be ambiguous."""
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.iter_chunks(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert store.list("") == []


@pytest.mark.parametrize("prefix", [*INVALID_PREFIXES, "../", "a/../"])
def test_invalid_prefixes_rejected(store: Storage, prefix: str) -> None:
    """list and delete_prefix refuse prefixes that could escape or be ambiguous."""
    store.put("keep/me", b"x")
    with pytest.raises(ValueError):
        store.list(prefix)
    with pytest.raises(ValueError):
        store.delete_prefix(prefix)
    assert store.get("keep/me") == b"x"


def test_storage_from_url_file(tmp_path: Path) -> None:
    """file:///abs/path makes a LocalStorage rooted there."""
    store = storage_from_url(f"file://{tmp_path / 'blobs'}")
    assert isinstance(store, LocalStorage)
    assert store.root == (tmp_path / "blobs").resolve()
    store.put("a/b", b"1")
    assert (tmp_path / "blobs" / "a" / "b").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bkt", "bkt", ""),
        ("s3://bkt/", "bkt", ""),
        ("s3://bkt/base", "bkt", "base/"),
        ("s3://bkt/base/dir/", "bkt", "base/dir/"),
    ],
)
def test_storage_from_url_s3(url: str, bucket: str, prefix: str) -> None:
    """s3://bucket/prefix makes an S3Storage with a normalised prefix."""
    store = storage_from_url(url, endpoint_url="http://127.0.0.1:9", region="eu-west-1")
    assert isinstance(store, S3Storage)
    assert (store.bucket, store.prefix) == (bucket, prefix)
    assert store.client.meta.region_name == "eu-west-1"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "http://host/x", "ftp://h/p", "/plain/path", "gs://b/p"])
def test_storage_from_url_rejects(url: str) -> None:
    """Unknown schemes and bucketless S3 URLs are refused."""
    with pytest.raises(ValueError):
        storage_from_url(url)


def test_s3_prefix_is_honoured(s3_server: str) -> None:
    """Objects land under the URL's prefix; keys are listed and deleted without it."""
    bucket = _bucket()
    store = storage_from_url(f"s3://{bucket}/base/dir", endpoint_url=s3_server)
    assert isinstance(store, S3Storage)
    store.ensure()
    store.client.put_object(Bucket=bucket, Key="other/outside", Body=b"o")
    store.put("users/1/a", b"a")
    store.put("users/1/b", b"b")
    assert _raw_keys(store) == ["base/dir/users/1/a", "base/dir/users/1/b", "other/outside"]
    assert store.list("") == ["users/1/a", "users/1/b"]
    assert store.get("users/1/a") == b"a"
    assert store.exists("users/1/b") and not store.exists("other/outside")
    assert store.delete_prefix("") == 2
    assert _raw_keys(store) == ["other/outside"]


def test_s3_check_fails_without_bucket(s3_server: str) -> None:
    """check raises when the bucket does not exist; ensure then creates it."""
    from botocore.exceptions import ClientError

    store = S3Storage(_bucket(), endpoint_url=s3_server)
    with pytest.raises(ClientError):
        store.check()
    store.ensure()
    store.check()


def test_local_put_leaves_no_temp_files(tmp_path: Path) -> None:
    """After puts only the objects remain, and an in-flight temp file is never listed."""
    store = LocalStorage(tmp_path / "root")
    for i in range(5):
        store.put("users/u/p/original.jpg", os.urandom(100 + i))
    files = [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["original.jpg"]
    (tmp_path / "root" / "users" / ".tmp-abc123").write_bytes(b"partial")
    assert store.list("") == ["users/u/p/original.jpg"]


def test_local_failed_put_keeps_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A put that fails before the rename leaves the old object whole and no temp file behind."""
    store = LocalStorage(tmp_path / "root")
    store.put("k/v", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("app.core.storage.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put("k/v", b"new" * 1000)
    monkeypatch.undo()
    assert store.get("k/v") == b"old"
    assert sorted(p.name for p in (tmp_path / "root" / "k").iterdir()) == ["v"]


def test_local_delete_prunes_empty_folders(tmp_path: Path) -> None:
    """Deleting the last object of a folder removes emptied folders up to, not including, the root."""
    root = tmp_path / "root"
    store = LocalStorage(root)
    store.put("users/u/s/a", b"1")
    store.put("users/u/t/b", b"2")
    store.delete("users/u/s/a")
    assert not (root / "users" / "u" / "s").exists()
    assert (root / "users" / "u" / "t" / "b").is_file()
    store.delete("users/u/t/b")
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_local_delete_prefix_stays_inside_root(tmp_path: Path) -> None:
    """delete_prefix never removes anything outside the root, whatever the prefix."""
    root = tmp_path / "outer" / "root"
    store = LocalStorage(root)
    store.ensure()
    sibling = tmp_path / "outer" / "sibling"
    sibling.mkdir()
    with contextlib.suppress(ValueError):
        store.delete_prefix("../")
    assert sibling.is_dir()
    store.put("k/v", b"1")
    for prefix in ("/", "/abs/"):
        with contextlib.suppress(ValueError):
            store.delete_prefix(prefix)
    assert store.get("k/v") == b"1"


def test_local_check_fails_when_root_unusable(tmp_path: Path) -> None:
    """check raises when the root cannot be created (a file is in the way)."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        LocalStorage(blocker / "root").check()


def test_a_store_seen_under_a_prefix(store: Storage) -> None:
    """`under(prefix)`: keys relative to the prefix, nothing outside it seen or touched."""
    store.put("users/u/outside.bin", b"o")
    work = store.under("users/u/trainings/t/")
    work.put("checkpoints/step-1.pt", b"1")
    work.put("cache/a", b"a")
    assert work.get("checkpoints/step-1.pt") == b"1" and work.get_or_none("missing") is None
    assert work.list("checkpoints/") == ["checkpoints/step-1.pt"]
    inside = ["users/u/trainings/t/cache/a", "users/u/trainings/t/checkpoints/step-1.pt"]
    assert store.list("users/u/trainings/") == inside
    assert work.delete_prefix("cache/") == 1
    with pytest.raises(ValueError):
        work.put("../outside.bin", b"x")
    assert store.list("users/u/") == ["users/u/outside.bin", "users/u/trainings/t/checkpoints/step-1.pt"]


def test_list_modified_gives_each_key_with_when_it_was_written(store: Storage) -> None:
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC) - timedelta(seconds=2)  # S3 keeps whole seconds
    store.put("users/u/b.bin", b"b")
    store.put("users/u/a.bin", b"a")
    store.put("other/c.bin", b"c")
    listed = store.list_modified("users/")
    assert [key for key, _ in listed] == ["users/u/a.bin", "users/u/b.bin"] == store.list("users/")
    for _key, modified in listed:
        assert modified.tzinfo is not None and before <= modified <= datetime.now(UTC) + timedelta(seconds=2)
    assert store.under("users/u/").list_modified("") == [("a.bin", listed[0][1]), ("b.bin", listed[1][1])]
