"""Test harness: real servers when the CI variables are set, embedded defaults otherwise.

- LOOKALIKE_TEST_DATABASE_URL (Postgres): a fresh database is created for the run and
  dropped after it; otherwise a SQLite file in a temp folder.
- LOOKALIKE_TEST_REDIS_URL: the broker, with a key prefix unique to the run; otherwise
  Celery's filesystem transport.
The schema is built with `alembic upgrade head`; a real Celery worker consumes the queues
in a thread, and tests drive the API over HTTP as a user would.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from tests.helpers import LoraMaker
from tests.procs import postgres_database, purge_redis

# Nothing is downloaded in tests: a Hub id fails at once instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
RUN_ID = uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Process-wide settings for the run, exported as LOOKALIKE_* variables."""
    from app.core import queue
    from app.core.db import dispose_engines, migrate
    from app.core.settings import get_settings

    data = tmp_path_factory.mktemp("data")
    # The session's TestClient is one address (`testclient`) for every test, and some send a bad key to every
    # operation (tests/api/test_authorization_matrix.py): their failed sign-ins are not throttled here. The
    # throttle is tested in tests/api/test_sign_in_throttle.py, each test from an address of its own.
    env = {"LOOKALIKE_DATA_DIR": str(data), "LOOKALIKE_RATE_LIMIT_SIGN_IN_FAILURES": "100000/minute"}
    pg_server = os.environ.get("LOOKALIKE_TEST_DATABASE_URL")
    redis_url = os.environ.get("LOOKALIKE_TEST_REDIS_URL")
    databases = ExitStack()
    if pg_server:
        env["LOOKALIKE_DATABASE_URL"] = databases.enter_context(
            postgres_database(pg_server, f"lookalike_test_{RUN_ID}")
        )
    if redis_url:
        env["LOOKALIKE_BROKER_URL"] = redis_url
        env["LOOKALIKE_BROKER_KEY_PREFIX"] = f"lookalike-test-{RUN_ID}:"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    queue.reset_client()
    current = get_settings()
    migrate(current.resolved_database_url)
    try:
        yield current
    finally:
        dispose_engines()
        databases.close()
        if redis_url:
            purge_redis(redis_url, env["LOOKALIKE_BROKER_KEY_PREFIX"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        queue.reset_client()


@pytest.fixture(scope="session")
def celery_worker(settings: Any) -> Iterator[Any]:
    """A real Celery worker consuming the cpu and gpu queues in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    from worker.celery_app import celery_app

    with start_worker(
        celery_app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
        queues=["cpu", "gpu"],
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def app(settings: Any) -> Any:
    from app.main import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: Any, celery_worker: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def storage(settings: Any) -> Any:
    from app.core.storage import get_storage

    return get_storage(settings)


@pytest.fixture
def db(settings: Any) -> Iterator[Any]:
    """A session for asserting on what landed in the database."""
    from app.core.db import session_factory

    session = session_factory(settings)()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(autouse=True)
def _clean_slate(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with no users, subjects, photos or stored files."""
    yield
    if "settings" not in request.fixturenames:
        return
    settings = request.getfixturevalue("settings")
    from sqlalchemy.exc import OperationalError

    from app.core.db import session_factory, session_scope
    from app.db import ApiKey, Generation, Model, Photo, ReplicateModel, Subject, Training, UploadedFile, User

    # A task the test left running (an analysis still writing its photo and subject) can deadlock with
    # these deletes on Postgres; Postgres then aborts one side, and the cleanup tries again.
    for attempt in range(5):
        try:
            with session_scope(session_factory(settings)) as session:
                for table in (Generation, UploadedFile, Model, Training, ReplicateModel, Photo, Subject, ApiKey, User):
                    session.execute(delete(table))
            break
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 4:
                raise
    shutil.rmtree(settings.data_dir / "storage", ignore_errors=True)


class Account:
    """A user with an API key, and the headers that authenticate as them."""

    def __init__(self, user_id: uuid.UUID, email: str, key: str) -> None:
        self.id, self.email, self.key = user_id, email, key
        self.headers = {"Authorization": f"Bearer {key}"}


@pytest.fixture
def make_account(settings: Any) -> Callable[[str], Account]:
    from app.core.db import session_factory, session_scope
    from app.users.service import create_user

    def make(email: str | None = None) -> Account:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        with session_scope(session_factory(settings)) as session:
            user, key = create_user(session, email=email)
            return Account(user.id, user.email, key)

    return make


@pytest.fixture
def account(make_account: Callable[[str], Account]) -> Account:
    return make_account()


@pytest.fixture
def subject(client: Any, account: Account) -> dict[str, Any]:
    response = client.post(
        "/v1/subjects", json={"name": "Barack", "class_word": "man", "consent": True}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3 endpoint URL served by moto in a thread of this process, with dummy credentials."""
    from moto.server import ThreadedMotoServer

    saved = {key: os.environ.get(key) for key in _AWS_ENV}
    for key, value in _AWS_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def lora_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora-models")


@pytest.fixture(scope="session")
def make_lora(lora_models_dir: Path) -> LoraMaker:
    """`make_lora(family, seed=0, strength=1.0, fmt="diffusers", meta=True)`: a LoRA file's bytes.

    Random lora_A and lora_B (scaled by `strength`, large enough to change a tiny model's image),
    exported by the trainer's own `worker.training.export`, as the service ships them.
    """
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from worker.training.export import diffusers_file, kohya_file, metadata
    from worker.training.families import family_class
    from worker.training.presets import ensure_tiny

    loaded: dict[str, object] = {}
    made: dict[tuple, bytes] = {}

    def make(family: str, seed: int = 0, strength: float = 1.0, fmt: str = "diffusers", meta: bool = True) -> bytes:
        key = (family, seed, strength, fmt, meta)
        if key in made:
            return made[key]
        if family not in loaded:
            source = ensure_tiny(f"tiny-{family}", lora_models_dir)
            loaded[family] = family_class(family).load(str(source), device=torch.device("cpu"), dtype=torch.float32)
        fam = loaded[family]
        fam.denoiser.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=fam.lora_targets()), adapter_name="make")
        generator = torch.Generator().manual_seed(seed)
        for name, param in fam.denoiser.named_parameters():
            if ".make." in name:
                scale = 0.2 * strength if "lora_B" in name else 0.2
                param.data = torch.randn(param.shape, generator=generator) * scale
        lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(fam.denoiser, adapter_name="make").items()}
        fam.denoiser.delete_adapters("make")
        words = {"trigger_word": "zorvek", "name": "test", "rank": 4, "alpha": 4, "settings": {}}
        info = metadata(family=family, base_model=f"tiny-{family}", **words) if meta else {}
        made[key] = diffusers_file(family, lora, info) if fmt == "diffusers" else kohya_file(family, lora, 4.0, info)
        return made[key]

    return make
