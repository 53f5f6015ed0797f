"""`python -m tests.worker.web_blocked ARGS`: the `lookalike` command on a machine with only the worker extra.

FastAPI, Starlette, the multipart parser and uvicorn cannot be imported here (as if not installed);
forked pool processes inherit the block.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("fastapi", "starlette", "multipart", "python_multipart", "uvicorn")


class _NotInstalled(MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (a worker-only install)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
for loaded in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
    del sys.modules[loaded]

if __name__ == "__main__":
    from app.cli import main

    main()
