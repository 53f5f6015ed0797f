"""One webhook POST (or a LoRA download) over http.client: no redirects, a bounded read, failures as short sentences.

Redirects are not followed because the target was vetted (app.notify.webhooks.check_target) and a Location
header could point anywhere; the status is recorded instead. For the same reason the connection goes to the
addresses that check returned, not to a fresh lookup of the host, which a rebinding DNS server could answer
with an internal address the second time. The response is only kept as an excerpt for the delivery log, and
the whole exchange has one deadline, so a receiver cannot make us read, store or wait for much.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_READ = 64 * 1024
EXCERPT_CHARS = 500
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class HttpAnswer:
    status: int
    excerpt: str


class HttpFailure(Exception):
    """No HTTP answer at all (refused, DNS, timeout, TLS); `reason` says which, briefly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = 10.0,
    addresses: Sequence[str] | None = None,
) -> HttpAnswer:
    """POST `body` to `url` within `timeout` seconds in all (connect, TLS, send and every read).

    With `addresses` (what check_target returned) it connects to the first that accepts, in order, without
    resolving the host again; the Host header, TLS SNI and certificate check still use the URL's host name.
    Only the DNS lookup done without `addresses` is outside the deadline.
    """
    status, data = _exchange("POST", url, body, headers, timeout, addresses, MAX_READ)
    return HttpAnswer(status=status, excerpt=_excerpt(data))


def get(url: str, *, timeout: float, max_bytes: int, addresses: Sequence[str] | None = None) -> tuple[int, bytes]:
    """GET `url` under the same rules as `post` (pinned addresses, one deadline, no redirects followed):
    the status and at most `max_bytes` + 1 bytes of the body, so a caller can tell a body was too long."""
    return _exchange("GET", url, None, {"User-Agent": "lookalike"}, timeout, addresses, max_bytes + 1)


def _exchange(
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
    addresses: Sequence[str] | None,
    limit: int,
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        raise HttpFailure("invalid port in URL") from None
    if port is None or not parts.hostname:
        raise HttpFailure(f"not an http(s) URL: {url}")
    if addresses is not None and not addresses:
        raise HttpFailure("no address to connect to")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    deadline = time.monotonic() + timeout
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = _PinnedHTTPSConnection(parts.hostname, port, addresses, deadline, ssl.create_default_context())
    else:
        conn = _PinnedHTTPConnection(parts.hostname, port, addresses, deadline)
    try:
        conn.request(method, path, body=body, headers=headers)
        with conn.getresponse() as response:
            data = response.read(limit)
        return response.status, data
    except TimeoutError:
        raise HttpFailure(f"timed out after {timeout:g} s") from None
    except ssl.SSLCertVerificationError as e:
        raise HttpFailure(f"TLS certificate not accepted: {e.verify_message}") from None
    except ssl.SSLError as e:
        raise HttpFailure(f"TLS error: {e.reason or e}") from None
    except socket.gaierror:
        raise HttpFailure(f"host {parts.hostname} does not resolve") from None
    except ConnectionRefusedError:
        raise HttpFailure("connection refused") from None
    except ConnectionError as e:
        raise HttpFailure(f"connection failed: {e.strerror or type(e).__name__}") from None
    except http.client.HTTPException as e:
        raise HttpFailure(f"not a valid HTTP answer ({type(e).__name__})") from None
    except OSError as e:
        raise HttpFailure(f"network error: {e.strerror or type(e).__name__}") from None
    finally:
        conn.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _connect(host: str, port: int, addresses: Sequence[str] | None, deadline: float) -> socket.socket:
    """A TCP connection to the first address that accepts (those of `host` if none are given), else the last
    failure. Connecting to addresses one by one keeps all the attempts together within the deadline."""
    if addresses is None:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    failure: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), timeout=_remaining(deadline))
        except TimeoutError:
            raise
        except OSError as e:
            failure = e
            continue
        with contextlib.suppress(OSError):  # as http.client does: not every platform has TCP_NODELAY
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise failure or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection for `host` (the Host header) that dials `addresses` if given, under one deadline."""

    def __init__(self, host: str, port: int, addresses: Sequence[str] | None, deadline: float) -> None:
        super().__init__(host, port)
        self._addresses = addresses
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect(self.host, self.port, self._addresses, self._deadline)
        self.sock = _DeadlineSocket(sock, self._deadline)  # type: ignore[assignment]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS, with SNI and the certificate check for `host`, not the address dialled."""

    def __init__(
        self, host: str, port: int, addresses: Sequence[str] | None, deadline: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, context=context)
        self._addresses = addresses
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect(self.host, self.port, self._addresses, self._deadline)
        try:
            sock.settimeout(_remaining(self._deadline))  # the handshake as a whole gets this long
            tls = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(tls, self._deadline)  # type: ignore[assignment]


class _DeadlineSocket:
    """What http.client sends on and reads from: each send and read may only take what is left of the deadline.

    Like a real socket, it stays open until the response reading from it is closed too, since http.client
    closes the connection before the body of a `Connection: close` answer has been read.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._readers = 0
        self._closing = False

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")  # a TypeError for non-bytes, which http.client expects from sendall
        while view:
            self._sock.settimeout(_remaining(self._deadline))
            view = view[self._sock.send(view) :]

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only 'rb' is supported, not {mode!r}")
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        self._closing = True
        if not self._readers:
            self._sock.close()

    def _reader_closed(self) -> None:
        self._readers -= 1
        if self._closing and not self._readers:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    def __init__(self, owner: _DeadlineSocket) -> None:
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._owner._sock.settimeout(_remaining(self._owner._deadline))
        return self._owner._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._owner._reader_closed()
        super().close()


def _excerpt(data: bytes) -> str:
    return data[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS]
