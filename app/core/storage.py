"""Object storage behind one interface: a local folder or S3 (any S3-compatible store).

Keys are laid out in `app.core.keys`. `Storage.under(prefix)` gives a view of one folder of a
store (a training's cache and checkpoints, the CLI's output folder) through the same interface.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlparse

from app.core.settings import Settings, get_settings

CHUNK = 1024 * 1024


class ObjectNotFound(KeyError):
    """No object at that key."""


def check_key(key: str) -> str:
    """Refuse keys that could escape their prefix or mean different things on different backends."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is empty (everything) or a valid key, optionally ending in '/'."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Storage(ABC):
    """What the service needs from a blob store."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Write `data` at `key` atomically: readers see the old object or the new one, never half."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; ObjectNotFound if absent."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object in chunks, for streaming responses; ObjectNotFound if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; absent is fine."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`, sorted."""

    @abstractmethod
    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        """Keys under `prefix`, sorted, each with when it was last written (UTC)."""

    @abstractmethod
    def check(self) -> None:
        """Raise if the store cannot be reached or written (readiness)."""

    @abstractmethod
    def ensure(self) -> None:
        """Create what the store needs to exist (folder, bucket); idempotent."""

    def under(self, prefix: str) -> Storage:
        """This store seen from inside `prefix` (a folder key ending in '/'): keys are relative to it."""
        return Scoped(self, prefix)

    def get_or_none(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except ObjectNotFound:
            return None

    def presigned_url(
        self, key: str, *, expires_s: int, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A link that fetches the object without credentials for `expires_s` seconds; None if the store cannot.

        A folder or a scoped view cannot: callers stream the object instead. `filename` and `content_type`
        are what the link's response says (Content-Disposition: attachment).
        """
        return None


class Scoped(Storage):
    """A view of one folder of another store; what the trainer writes its cache and checkpoints to."""

    def __init__(self, inner: Storage, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a scoped prefix ends with '/': {prefix!r}")
        self.inner, self.prefix = inner, check_prefix(prefix)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self.inner.put(self.prefix + check_key(key), data, content_type=content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(self.prefix + check_key(key))

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        return self.inner.iter_chunks(self.prefix + check_key(key), chunk_size)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self.prefix + check_key(key))

    def delete(self, key: str) -> None:
        self.inner.delete(self.prefix + check_key(key))

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(self.prefix + check_prefix(prefix))

    def list(self, prefix: str) -> list[str]:
        return [key[len(self.prefix) :] for key in self.inner.list(self.prefix + check_prefix(prefix))]

    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        listed = self.inner.list_modified(self.prefix + check_prefix(prefix))
        return [(key[len(self.prefix) :], modified) for key, modified in listed]

    def check(self) -> None:
        self.inner.check()

    def ensure(self) -> None:
        self.inner.ensure()


class LocalStorage(Storage):
    """Objects as files under a root folder; writes go through a temp file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except _MISSING:
            raise ObjectNotFound(key) from None

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            fh = self._path(key).open("rb")
        except _MISSING:
            raise ObjectNotFound(key) from None
        return _file_chunks(fh, chunk_size)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            self._prune(path.parent)
        if prefix.endswith("/"):
            target = self.root / prefix.rstrip("/")
            if target.is_dir():  # leftovers such as temp files of interrupted writes
                shutil.rmtree(target, ignore_errors=True)
                self._prune(target.parent)
        return len(keys)

    def list(self, prefix: str) -> list[str]:
        return [key for key, _path in self._walk(prefix)]

    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        listed = []
        for key, path in self._walk(prefix):
            try:
                listed.append((key, datetime.fromtimestamp(path.stat().st_mtime, UTC)))
            except FileNotFoundError:  # deleted meanwhile
                continue
        return listed

    def _walk(self, prefix: str) -> list[tuple[str, Path]]:
        check_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        found = []
        # os.walk skips folders that vanish while it walks (a concurrent delete prunes them);
        # Path.rglob raises FileNotFoundError instead.
        for folder, _dirs, names in os.walk(base):
            for name in names:
                if name.startswith(".tmp-"):
                    continue
                path = Path(folder, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append((key, path))
        return sorted(found)

    def check(self) -> None:
        self.ensure()
        probe = self.root / f".tmp-ready-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()

    def _prune(self, folder: Path) -> None:
        # Remove emptied folders up to the root so deleted users leave no trace.
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _file_chunks(fh, chunk_size: int) -> Iterator[bytes]:  # noqa: ANN001
    with fh:
        while chunk := fh.read(chunk_size):
            yield chunk


class S3Storage(Storage):
    """Objects in an S3 bucket under an optional prefix, through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        region = region or "us-east-1"
        config = Config(retries={"max_attempts": 4, "mode": "standard"}, max_pool_connections=32)
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        # Links are signed for the address users reach (SigV4 signs the host), which may differ from the
        # one this process uses (http://minio:9000 inside, https://s3.example.com outside). Signing needs
        # no network, so this client never connects anywhere.
        self.signer = boto3.client(
            "s3",
            endpoint_url=public_endpoint_url or endpoint_url,
            region_name=region,
            config=Config(signature_version="s3v4"),
        )

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _is_missing(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")

    def ensure(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not self._is_missing(exc):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"].read()
        except ClientError as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(key) from None
            raise

    def iter_chunks(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
        except ClientError as exc:
            if self._is_missing(exc):
                raise ObjectNotFound(key) from None
            raise
        return _stream_chunks(body, chunk_size)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except ClientError as exc:
            if self._is_missing(exc):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = [self.prefix + k for k in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def list(self, prefix: str) -> list[str]:
        return [key for key, _modified in self.list_modified(prefix)]

    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        check_prefix(prefix)
        listed: list[tuple[str, datetime]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            listed.extend((obj["Key"][len(self.prefix) :], obj["LastModified"]) for obj in page.get("Contents", []))
        return sorted(listed)

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    def presigned_url(
        self, key: str, *, expires_s: int, filename: str | None = None, content_type: str | None = None
    ) -> str:
        params = {"Bucket": self.bucket, "Key": self._k(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type is not None:
            params["ResponseContentType"] = content_type
        return self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)


def _stream_chunks(body, chunk_size: int) -> Iterator[bytes]:  # noqa: ANN001
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def content_disposition(filename: str) -> str:
    """`attachment` with the name: quoted ASCII for every client, and RFC 5987 UTF-8 when it is not ASCII."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename) or "download"
    header = f'attachment; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


def storage_from_url(
    url: str, *, endpoint_url: str | None = None, region: str | None = None, public_endpoint_url: str | None = None
) -> Storage:
    """`file:///abs/path` or `s3://bucket/optional/prefix`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"LOOKALIKE_STORAGE_URL {url!r} names no bucket (s3://bucket/prefix)")
        return S3Storage(
            parsed.netloc,
            parsed.path,
            endpoint_url=endpoint_url,
            region=region,
            public_endpoint_url=public_endpoint_url,
        )
    raise ValueError(f"LOOKALIKE_STORAGE_URL {url!r}: use file:///path or s3://bucket/prefix")


_STORES: dict[tuple[str, str | None, str | None], Storage] = {}
_STORES_LOCK = threading.Lock()


def get_storage(settings: Settings | None = None) -> Storage:
    """The process-wide store for the configured URL."""
    settings = settings or get_settings()
    ident = (settings.resolved_storage_url, settings.s3_endpoint_url, settings.s3_public_endpoint_url)
    with _STORES_LOCK:
        if ident not in _STORES:
            _STORES[ident] = storage_from_url(
                ident[0], endpoint_url=ident[1], region=settings.s3_region, public_endpoint_url=ident[2]
            )
        return _STORES[ident]
