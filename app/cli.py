"""The `lookalike` command: run the service, migrate the database, manage users and keys."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import click

from app.core.settings import get_settings
from app.generations import params as gen  # pure Python: the command's limits are the API's


def _fail(message: str) -> None:
    click.secho(message, fg="red", err=True)
    sys.exit(1)


def _setup_logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check is not news


def _require_schema() -> None:
    from app.core.db import SchemaOutOfDate, check_schema, get_engine

    try:
        check_schema(get_engine())
    except SchemaOutOfDate as exc:
        _fail(str(exc))


@click.group()
def main() -> None:
    """Lookalike: train a personal face model on hardware you control."""


@main.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
def migrate(revision: str) -> None:
    """Create or upgrade the database schema."""
    from app.core.db import current_revision, get_engine
    from app.core.db import migrate as run_migrations

    settings = get_settings()
    run_migrations(settings.resolved_database_url, revision)
    click.echo(f"database at revision {current_revision(get_engine())}")


# --- running ---------------------------------------------------------------------------------------


def _api_config(host: str, port: int) -> dict:
    return {
        "app": "app.main:create_app",
        "factory": True,
        "host": host,
        "port": port,
        "log_level": get_settings().log_level.lower(),
        "proxy_headers": True,
    }


def _run_api(host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        _ReusePortWorkers(_api_config(host, port), workers).run()
    else:
        uvicorn.run(**_api_config(host, port), workers=workers)


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _serve_api(config: dict) -> None:
    """One API worker process: its own socket on the shared port, uvicorn on it."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(**config)).run(sockets=[_listening_socket(config["host"], config["port"])])


class _ReusePortWorkers:
    """`lookalike api --workers N`: N uvicorn processes, each listening on the port with SO_REUSEPORT.

    uvicorn's own workers share one listening socket, and whichever is awake accepts: a burst of new
    connections (32 clients arriving at once) can land mostly on one process, whose clients then wait
    while the other idles (measured: p50 3 ms, p99 over 1 s). With a socket each, the kernel spreads
    connections evenly. A worker that dies is replaced; SIGTERM or SIGINT stops them all gracefully.
    """

    def __init__(self, config: dict, workers: int) -> None:
        import multiprocessing

        self.config, self.workers = config, workers
        self.context = multiprocessing.get_context("spawn")
        self.stopping = False

    def _start(self):  # noqa: ANN202
        proc = self.context.Process(target=_serve_api, args=(self.config,), daemon=False)
        proc.start()
        proc.started = time.monotonic()
        return proc

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def run(self) -> None:
        _listening_socket(self.config["host"], self.config["port"]).close()  # fail here if the port is taken
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        procs = [self._start() for _ in range(self.workers)]
        failed = None
        while not self.stopping:
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                if proc.is_alive() or self.stopping:
                    continue
                # An error exit right after starting (the app failed to load) is not a crash to recover
                # from; a kill by a signal (the OOM killer) always is.
                if proc.exitcode > 0 and time.monotonic() - proc.started < 5.0:
                    failed = f"an API worker exited as it started (code {proc.exitcode}); see the log above"
                    self.stopping = True
                    break
                click.echo(f"API worker {proc.pid} exited (code {proc.exitcode}); starting another", err=True)
                procs[i] = self._start()
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        if failed:
            _fail(failed)


def _worker_argv(queues: str, concurrency: int, pool: str | None, beat: bool = False) -> list[str]:
    settings = get_settings()
    argv = ["worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", settings.log_level.upper()]
    if pool:
        argv += ["--pool", pool]
    if beat:
        argv += ["--beat"]
    if settings.is_embedded_broker:
        # The filesystem transport has no fan-out: no gossip, mingle or heartbeats.
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


@main.command()
@click.option("--host", default=None, help="Interface to listen on [LOOKALIKE_HOST].")
@click.option("--port", type=int, default=None, help="Port [LOOKALIKE_PORT].")
@click.option("--workers", type=int, default=1, show_default=True, help="Uvicorn worker processes.")
def api(host: str | None, port: int | None, workers: int) -> None:
    """Run the HTTP API only (production: workers run separately)."""
    _setup_logging()
    _require_schema()
    settings = get_settings()
    _run_api(host or settings.host, port or settings.port, workers)


@main.command()
@click.option("--queues", default="cpu,gpu", show_default=True, help="Comma-separated queues to consume.")
@click.option("--concurrency", type=int, default=None, help="Worker processes [LOOKALIKE_WORKER_CONCURRENCY].")
@click.option("--pool", default=None, help="Celery pool (prefork, solo, threads).")
@click.option("--beat", is_flag=True, help="Also run Celery beat (the housekeeping sweep) in this worker.")
def worker(queues: str, concurrency: int | None, pool: str | None, beat: bool) -> None:
    """Run a Celery worker."""
    _require_schema()
    from worker.celery_app import celery_app

    code = celery_app.start(_worker_argv(queues, concurrency or get_settings().worker_concurrency, pool, beat))
    # Stopped: every task is done or handed back, the pool processes are joined, beat is stopped.
    # What exit would still do is billiard's clean-up of the pool's helper threads, which sleep up to
    # a second between looks at their state: seconds for nothing, on every stop. Leave without it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


@main.command()
def beat() -> None:
    """Run Celery beat: it sends the housekeeping sweep every LOOKALIKE_SWEEP_INTERVAL_S (one per deployment)."""
    _setup_logging()
    _require_schema()
    from app.core.queue import make_celery

    settings = get_settings()
    make_celery(settings, name="lookalike-beat").Beat(loglevel=settings.log_level.upper(), quiet=True).run()


@main.command()
@click.option("--host", default=None, help="Interface to listen on [LOOKALIKE_HOST].")
@click.option("--port", type=int, default=None, help="Port [LOOKALIKE_PORT].")
def serve(host: str | None, port: int | None) -> None:
    """Run the API and a worker (with the housekeeping beat) together, embedded mode; Ctrl-C stops both."""
    _setup_logging()
    _require_schema()
    settings = get_settings()
    worker = _Supervised([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu,gpu", "--beat"])
    # uvicorn re-raises the signal that stopped it once it has restored the previous handler;
    # SIGTERM's default action would end us before the `finally` that stops the worker.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    worker.start()
    click.echo(f"Lookalike on http://{host or settings.host}:{port or settings.port} (data in {settings.data_dir})")
    try:
        _run_api(host or settings.host, port or settings.port)
    finally:
        worker.stop()
        click.echo("stopped")


class _Supervised:
    """The worker of `serve`: started again if it dies (OOM killer, a crash), stopped in order with us.

    The API stays up meanwhile; jobs the dead worker held are resumed by the housekeeping sweep.
    More than RESTARTS deaths within a minute stop the whole service, with the reason in the log.
    """

    RESTARTS = 5
    STOP_WAIT_S = 60.0

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.log = logging.getLogger("lookalike.serve")
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.child: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        # Its own session: Ctrl-C reaches only us, and we stop the worker in order after the API.
        self.child = subprocess.Popen(self.cmd, start_new_session=True, preexec_fn=_die_with_parent)

    def start(self) -> None:
        with self.lock:
            self._spawn()
        threading.Thread(target=self._watch, name="worker-supervisor", daemon=True).start()

    def _watch(self) -> None:
        import time

        deaths: list[float] = []
        while True:
            code = self.child.wait()  # type: ignore[union-attr]
            if self.stopping.is_set():
                return
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < 60] + [now]
            if len(deaths) > self.RESTARTS:
                self.log.error("the worker died %d times within a minute (last code %s); stopping", len(deaths), code)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self.log.error("the worker exited unexpectedly (code %s); starting it again", code)
            time.sleep(1.0)
            with self.lock:
                if self.stopping.is_set():
                    return
                self._spawn()

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            child = self.child
        if child is None or child.poll() is not None:
            return
        # Celery's warm shutdown: a training checkpoints and hands its job back within a step.
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=self.STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM if `serve` itself dies without cleaning up (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# --- users and keys ----------------------------------------------------------------------------


@contextmanager
def _session():  # noqa: ANN202
    from app.audit.service import CLI, set_actor
    from app.core.db import session_scope

    _require_schema()
    with session_scope() as session:
        set_actor(session, actor=CLI)  # what the CLI changes shows as done by `cli` in the audit log
        yield session


def _app_errors(fn):  # noqa: ANN001, ANN202
    from functools import wraps

    from app.core.errors import AppError

    @wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except AppError as exc:
            _fail(f"{exc.message}" + (f"\n{exc.hint}" if exc.hint else ""))

    return wrapper


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("email")
@_app_errors
def users_create(email: str) -> None:
    """Create a user and print their API key (shown only this once)."""
    from app.users.service import create_user

    with _session() as session:
        user, key = create_user(session, email=email)
        user_id = user.id
    click.echo(f"user {user_id} <{email.strip().lower()}>", err=True)
    click.echo("API key (shown once, keep it safe):", err=True)
    click.echo(key)


@users.command("list")
def users_list() -> None:
    """List users with their number of active keys."""
    from app.users.service import list_users

    with _session() as session:
        for user, active in list_users(session):
            click.echo(f"{user.id}  {user.email}  keys={active}  created={user.created_at:%Y-%m-%d %H:%M}")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.argument("email")
@click.option("--name", default=None, help="A label to recognise the key by.")
@_app_errors
def keys_create(email: str, name: str | None) -> None:
    """Create another API key for a user (shown only this once)."""
    from app.users.service import create_key

    with _session() as session:
        row, key = create_key(session, email=email, name=name)
        key_id = row.id
    click.echo(f"key {key_id}", err=True)
    click.echo(key)


@keys.command("list")
@click.argument("email")
@_app_errors
def keys_list(email: str) -> None:
    """List a user's keys (ids and prefixes; the keys themselves are not stored)."""
    from app.users.service import list_keys

    with _session() as session:
        for key in list_keys(session, email=email):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
            click.echo(f"{key.id}  {key.prefix}…  {key.name or '-'}  {state}  last used {used}")


@keys.command("revoke")
@click.argument("key")
@_app_errors
def keys_revoke(key: str) -> None:
    """Revoke a key, given its id, its prefix or the key itself."""
    from app.users.service import revoke_key

    with _session() as session:
        row = revoke_key(session, ident=key)
        key_id = row.id
    click.echo(f"revoked {key_id}")


@main.command()
@click.argument("photos_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--base-model", default=None, help="Preset (sd15, sdxl, flux-dev, tiny-*), Hub id or diffusers folder.")
@click.option("--name", default=None, help="The model's name in its files (default: the output folder's name).")
@click.option("--trigger-word", default=None, help="Generated when omitted.")
@click.option("--class-word", default="person", show_default=True, help="man, woman, person...")
@click.option("--steps", type=int, default=None, help="Training steps (default: the family's).")
@click.option("--rank", type=int, default=None, help="LoRA rank (default: the family's).")
@click.option("--learning-rate", type=float, default=None, help="(default: the family's)")
@click.option("--resolution", type=int, default=None, help="(default: the family's)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--face-weight", type=float, default=None, help="Face loss weight; 1.0 turns it off (default: 3).")
@click.option("--batch-size", type=int, default=None, help="(default: from the photo count and GPU memory)")
@click.option("--min-photos", type=int, default=None, help="[LOOKALIKE_MIN_TRAINING_PHOTOS]")
@click.option(
    "--validation-prompt", "validation_prompts", multiple=True, help="Also sampled at each checkpoint (repeatable)."
)
@click.option("--verbose", is_flag=True, help="Show the libraries' warnings and logs.")
def train(
    photos_dir: Path, output: Path, base_model: str | None, name: str | None, verbose: bool, **knobs: object
) -> None:
    """Analyse, train and export a LoRA from a folder of photos: no server, database or queue."""
    # The one command that runs worker code in this process (torch, diffusers): imported here only.
    from app.trainings.catalog import TINY_NOTE, UnknownBaseModel, default_base_model, resolve
    from worker.libraries import quiet_libraries
    from worker.training.errors import TrainingError
    from worker.training.local import train_folder

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    settings = get_settings()
    if knobs["min_photos"] is not None:
        settings = settings.model_copy(update={"min_training_photos": knobs["min_photos"]})
    base_model = base_model or default_base_model(settings.default_base_model)
    overrides = {k: knobs[k] for k in ("steps", "rank", "learning_rate", "resolution", "face_weight", "batch_size")}
    bar = None

    def on_photo(photo) -> None:  # noqa: ANN001
        mark = {"accepted": "ok  ", "warning": "warn", "rejected": "skip"}.get(photo.verdict, photo.verdict)
        extra = f" ({', '.join(photo.reasons)})" if photo.reasons else ""
        click.echo(f"  {mark} {photo.path.name}{extra}")

    def on_progress(p) -> bool:  # noqa: ANN001
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=p.total_steps, label="training", show_pos=True, show_eta=True)
            bar.__enter__()
        bar.update(p.step - bar.pos)
        bar.label = f"training (loss {p.loss:.4f})" if p.loss is not None else "training"
        return True

    def on_phase(name: str) -> None:
        nonlocal bar
        if name == "assessing":
            if bar is not None:
                bar.__exit__(None, None, None)
                bar = None
            click.echo("Assessing: sampling each kept checkpoint and scoring its faces ...")

    click.echo(f"Analysing {photos_dir} ...")
    try:
        with quiet_libraries(verbose):
            run = train_folder(
                photos_dir,
                output=output,
                settings=settings,
                base_model=base_model,
                name=name,
                trigger_word=knobs["trigger_word"],
                class_word=knobs["class_word"],
                seed=knobs["seed"],
                validation_prompts=knobs["validation_prompts"],
                overrides=overrides,
                on_photo=on_photo,
                on_progress=on_progress,
                on_phase=on_phase,
            )
    except UnknownBaseModel as exc:
        _fail(str(exc))
    except TrainingError as exc:
        _fail(f"{exc.message}\n{exc.hint}")
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)

    if run.quality:
        _quality_report(run.quality)
    else:
        click.secho("The assessment could not run (see the log above); the final weights were exported.", fg="yellow")
    click.echo(f"Trigger word: {run.trigger_word}")
    for fmt, path in run.files.items():
        click.echo(f"{fmt:9} {path}")
    if run.sheet:
        click.echo(f"{'samples':9} {run.sheet}")
    if resolve(base_model).tiny:
        click.secho(TINY_NOTE, fg="yellow")


def _lora_option(value: str) -> tuple[Path, float]:
    """PATH or PATH:SCALE (a path may itself hold colons: only a number after the last one is a scale)."""
    path, _, scale = value.rpartition(":")
    try:
        return Path(path), float(scale)
    except ValueError:
        return Path(value), gen.DEFAULT_LORA_SCALE


@main.command()
@click.option(
    "--lora", "loras", multiple=True, required=True, metavar="PATH[:SCALE]",
    help=f"A LoRA .safetensors file and its scale (default {gen.DEFAULT_LORA_SCALE}); repeatable.",
)  # fmt: skip
@click.option("--base-model", default=None, help="Preset, Hub id or diffusers folder (default: the first LoRA's).")
@click.option("--prompt", required=True, help="The trigger word is put in front when it is missing.")
@click.option("--negative-prompt", default=None, help="(default: the family's; FLUX takes none)")
@click.option("--num-outputs", type=click.IntRange(1, gen.MAX_OUTPUTS), default=1, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="(default: random, printed)")
@click.option("--width", type=click.IntRange(gen.MIN_SIDE, gen.MAX_SIDE), default=None)
@click.option("--height", type=click.IntRange(gen.MIN_SIDE, gen.MAX_SIDE), default=None)
@click.option("--aspect-ratio", type=click.Choice(list(gen.ASPECT_RATIOS)), default=None, help="(default 1:1)")
@click.option("--steps", type=click.IntRange(1, 500), default=None, help="(default: the family's)")
@click.option("--guidance", type=click.FloatRange(0, 30), default=None, help="(default: the family's)")
@click.option(
    "--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="Start image."
)
@click.option(
    "--prompt-strength", type=click.FloatRange(0, 1), default=gen.DEFAULT_PROMPT_STRENGTH, show_default=True,
    help="With --image: how much of it is redrawn.",
)  # fmt: skip
@click.option("--output-format", type=click.Choice(list(gen.OUTPUT_FORMATS)), default="png", show_default=True)
@click.option("--output-quality", type=click.IntRange(1, 100), default=90, show_default=True, help="jpg and webp")
@click.option("--sweep", is_flag=True, help="The first LoRA at scales 0 to 1.2, and a contact sheet.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--verbose", is_flag=True, help="Show the libraries' warnings and logs.")
def generate(loras: tuple[str, ...], verbose: bool, **request: object) -> None:
    """Generate images with LoRA files on this machine: no server, database or queue."""
    # Like `train`, this runs worker code (torch, diffusers) in this process: imported here only.
    from app.generations.lorafile import LoraFileError
    from app.trainings.catalog import UnknownBaseModel
    from worker.generation.errors import GenerationError
    from worker.libraries import import_libraries, quiet_libraries

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    try:
        with quiet_libraries(verbose):
            import_libraries()  # with the collector paused: see worker.libraries
            from worker.generation.local import generate_files

            generate_files(
                [_lora_option(value) for value in loras],
                settings=get_settings(),
                note=click.echo,
                written=lambda path: click.echo(f"wrote {path}"),
                **request,  # type: ignore[arg-type]
            )
    except GenerationError as exc:
        click.secho(f"{exc.message} {exc.hint}", fg="red", err=True)
        sys.exit(2 if exc.code == "lora_mismatch" else 1)
    except (UnknownBaseModel, LoraFileError, OSError) as exc:
        _fail(str(exc))


def _quality_report(quality: dict) -> None:
    """The assessment as a short table: one line per checkpoint, then the verdict and the advice."""

    def num(value: object, fmt: str = "{:.0f}") -> str:
        return "-" if value is None else fmt.format(value)

    click.echo("Quality (likeness and bleed 0-100; 60 is the same-person line):")
    click.echo("   step  likeness  faces  copies  bleed")
    for c in quality["checkpoints"]:
        kept = "  <- kept" if c["step"] == quality["chosen_step"] else ""
        click.echo(
            f"  {c['step']:5}  {num(c['identity_similarity']):>8}  {c['face_detection_rate']:>5.0%}"
            f"  {c['memorization']:>6.0%}  {num(c['identity_bleed']):>5}{kept}"
        )
    colour = {"excellent": "green", "good": "green", "weak": "yellow"}.get(quality["verdict"], "red")
    score = "" if quality["score"] is None else f" {quality['score']:.0f}/100"
    click.secho(f"Verdict: {quality['verdict']}{score}", fg=colour, bold=True)
    click.echo(quality["advice"])


if __name__ == "__main__":  # `python -m app.cli`, as `serve` starts its worker: after every command is defined
    main()
