"""`lookalike api --workers N`: N processes each listening on the port (SO_REUSEPORT); a worker that is
killed is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import signal
import socket

import httpx
import pytest

from tests.helpers import wait_for
from tests.procs import alive, base_env, children, kill_tree, responds, run, running


def api_workers(pid: int) -> list[int]:
    """The API worker processes of `lookalike api` (not multiprocessing's resource tracker)."""
    found = []
    for child in children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                if b"spawn_main" in fh.read():
                    found.append(child)
        except OSError:
            pass
    return found


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is Linux/BSD only")
def test_api_workers_share_the_port_and_a_killed_one_is_replaced(tmp_path):
    env = base_env(tmp_path / "data")
    run(env, "migrate")
    base = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    with running(env, tmp_path / "api.log", "api", "--workers", "2") as api:
        wait_for(lambda: responds(base + "/readyz"), timeout=90, interval=0.2)
        workers = wait_for(lambda: (w := api_workers(api.pid)) and len(w) == 2 and w, timeout=30)
        # Many short connections all answered: whichever process the kernel hands each to.
        assert all(httpx.get(base + "/healthz", timeout=10).status_code == 200 for _ in range(40))

        kill_tree(workers[0])  # as the OOM killer would
        assert not alive(workers[0])
        replaced = wait_for(
            lambda: (w := api_workers(api.pid)) and len(w) == 2 and workers[0] not in w and w, timeout=60
        )
        assert workers[1] in replaced
        wait_for(lambda: all(responds(base + "/healthz") for _ in range(10)), timeout=60, interval=0.2)

        assert api.stop(signal.SIGTERM, timeout=90) == 0, api.output()[-2000:]
        assert not any(alive(pid) for pid in replaced), "an API worker outlived `lookalike api`"
    assert "exited" in api.output()  # the replacement was logged


def test_api_fails_clearly_when_the_port_is_taken(tmp_path):
    env = base_env(tmp_path / "data")
    run(env, "migrate")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["LOOKALIKE_PORT"])))
        taken.listen(1)
        with running(env, tmp_path / "api.log", "api", "--workers", "2") as api:
            assert api.popen.wait(timeout=60) != 0
    assert "Address already in use" in api.output() or "in use" in api.output()
