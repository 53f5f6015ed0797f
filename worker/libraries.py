"""The libraries the worker runs on (torch, diffusers, transformers, peft, dlib): imported once, quietly.

What a user or an operator should not have to read: setuptools' `pkg_resources` notice that
face_recognition_models prints on import, transformers' "requires torchvision" fallbacks, the
libraries' deprecation notices, logs and progress bars. `quiet_warnings` keeps their warnings
out of a process that runs worker code (the Celery worker and the pool processes it forks);
`quiet_libraries` also turns their logging down for `lookalike train` and `lookalike generate`,
unless `--verbose`.

`import_libraries` imports torch, diffusers, transformers and peft with the garbage collector
paused: they create some 700,000 objects that live as long as the process, and each collection
on the way walks all of them again (a third of the import time). `gc.freeze()` then keeps them
out of later collections, the one at exit included (a second at the end of every command).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# Whose warnings and logs are noise to a user; matched as module-name prefixes.
LIBRARIES = ("accelerate", "diffusers", "face_recognition_models", "huggingface_hub", "peft", "torch", "transformers")
HEAVY = ("torch", "diffusers", "transformers", "peft")
# Read by the libraries when they are imported; an operator's own setting wins.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def quiet_warnings() -> None:
    """Keep the libraries' warnings out of this process's output and of the processes it forks."""
    # The notice names face_recognition_models' import line as its source.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    # Only warnings raised from the libraries' own modules: pytest's `error::...:worker.*` still sees ours.
    warnings.filterwarnings("ignore", module=rf"({'|'.join(LIBRARIES)})(\.|$)")


@contextlib.contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """The libraries' warnings, logs and progress bars off the terminal unless `verbose`; as they were afterwards.

    Set before the libraries are imported (their environment variables) and after (their own setters:
    each resets its logger's level when it first configures it), so it holds either way.
    """
    if verbose:
        yield
        return
    saved_env = {name: os.environ.get(name) for name in QUIET_ENV}
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    loaded = [name for name in ("diffusers", "transformers") if name in sys.modules]
    imported = [importlib.import_module(f"{name}.utils.logging") for name in loaded]
    verbosities = [(library, library.get_verbosity(), library.is_progress_bar_enabled()) for library in imported]
    for library in imported:
        library.set_verbosity_error()
        library.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            quiet_warnings()
            yield
    finally:
        for library, verbosity, bars in verbosities:
            library.set_verbosity(verbosity)
            if bars:
                library.enable_progress_bar()
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def import_libraries(*attributes: tuple[str, str]) -> None:
    """Import torch, diffusers, transformers, peft and each `(module, attribute)`, the garbage collector paused.

    Only a fresh process gains from the pause; one that holds the libraries already (a test run)
    keeps its collector as it is. (Importing them on a second thread while the photos are analysed
    gains nothing: both hold the GIL nearly all the time.)
    """
    pause = gc.isenabled() and "torch" not in sys.modules
    if pause:
        gc.disable()
    try:
        for name in HEAVY:
            importlib.import_module(name)
        for name, attribute in attributes:  # e.g. the pipeline class, which diffusers imports lazily
            getattr(importlib.import_module(name), attribute)
    finally:
        if pause:
            gc.freeze()
            gc.enable()
