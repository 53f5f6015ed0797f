"""A real webhook receiver on loopback (http.server in a thread) that records every request.

It answers the scripted statuses in turn, then by path: /redirect a 302, /big a 100 KB body,
anything else 200 "accepted <body>". With `tls` it speaks HTTPS and records each client's SNI name.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    statuses: list[int]
    url: str = ""
    port: int = 0
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


@contextmanager
def serving(*statuses: int, tls: ssl.SSLContext | None = None, path: str = "") -> Iterator[Receiver]:
    """The receiver's base URL (plus `path`) is `Receiver.url` while the block runs."""
    state = Receiver(list(statuses))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                scripted = state.statuses.pop(0) if state.statuses else None
            if scripted is not None:
                self._answer(scripted, b"ok" if scripted < 300 else b"not now")
            elif self.path == "/redirect":
                self._answer(302, b"moved", location="/elsewhere")
            elif self.path == "/big":
                self._answer(200, b"x" * 100_000)
            else:
                self._answer(200, b"accepted " + body)

        def _answer(self, status: int, payload: bytes, location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gives up on the certificate is what some tests expect

    server = Server(("127.0.0.1", 0), Handler)
    if tls is not None:
        tls.sni_callback = lambda _conn, name, _ctx: state.server_names.append(name)  # type: ignore[assignment]
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.port = server.server_address[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{state.port}{path}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
