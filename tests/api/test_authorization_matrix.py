"""The authorization matrix, generated from the OpenAPI documents: a new endpoint is covered by being there.

Every operation of the native API and of the Replicate-compatible API (a sub-application mounted at
/replicate, with its own document) is called:
- by bob with alice's ids in every path parameter, and in every body field that references a resource
  (one call per field, bob's own resources filling the others): it answers 404 in the API's error shape,
  and none of alice's rows or stored objects change;
- with no key, a revoked key and a malformed Authorization header: it answers 401 with
  `WWW-Authenticate: Bearer`, unless it is one of the public endpoints listed below, on purpose.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers import fixture_bytes, insert_model, jpeg_bytes, wait_for, zip_bytes

REPLICATE = "/replicate"

# Answer without a key, on purpose. A new public endpoint fails test_public_endpoints_are_the_listed_ones
# until it is added here.
PUBLIC = {
    ("GET", "/"),
    ("GET", "/ui/{name}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/replicate/openapi.json"),
    ("GET", "/replicate/docs"),
    ("GET", "/replicate/docs/oauth2-redirect"),
    ("GET", "/replicate/redoc"),
}

# Path parameters that are not ids of a user's resource, and the value they get.
NOT_IDS: dict[tuple[str, str] | str, dict[str, str]] = {
    # The trainer (owner/name:version) only picks the base model; the destination in the body is the user's.
    ("POST", "/replicate/v1/models/{owner}/{name}/versions/{version_id}/trainings"): {
        "owner": "lookalike",
        "name": "lora-trainer",
        "version_id": "tiny-sd15",
    },
    "*": {"index": "0"},
}

# Values for body fields that a generic "x" or 1 would not pass (so that a 422 does not hide the 404).
EXAMPLES: dict[str, Any] = {
    "name": "probe",
    "consent": True,
    "class_word": "man",
    "prompt": "portrait",
    "base_model": "tiny-sd15",
    "owner": "bob",
    "visibility": "private",
    "hardware": "cpu",
    "caption": "a caption",
    "excluded": True,
}


# --- the operations, from the OpenAPI documents --------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as the client calls it: /replicate prefix included
    spec: dict[str, Any] = field(compare=False, hash=False)
    components: dict[str, Any] = field(compare=False, hash=False)

    @property
    def replicate(self) -> bool:
        return self.path.startswith(REPLICATE + "/")

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{([^}:]+)(?::[^}]*)?}", self.path)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def body(self) -> tuple[str, dict[str, Any]] | None:
        """The request body's media type and schema, if it takes one."""
        content = self.spec.get("requestBody", {}).get("content", {})
        for media, entry in content.items():
            return media, self.resolve(entry.get("schema", {}))
        return None


def _routes(app: Any) -> list[Any]:
    """The app's routes, those of included routers flattened (FastAPI 0.16x keeps included routers whole)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def _mounts(app: Any) -> Iterator[tuple[str, Any]]:
    from fastapi import FastAPI
    from starlette.routing import Mount

    yield "", app
    for route in _routes(app):
        mount = getattr(route, "original_route", route)
        if isinstance(mount, Mount) and isinstance(mount.app, FastAPI):
            yield mount.path, mount.app


def operations(app: Any) -> list[Operation]:
    """Every operation in the app's OpenAPI document and in those of the FastAPI apps mounted in it."""
    found = []
    for prefix, sub in _mounts(app):
        doc = sub.openapi()
        for path, item in doc["paths"].items():
            for method, spec in item.items():
                if method in ("get", "post", "put", "patch", "delete"):
                    found.append(Operation(method.upper(), prefix + path, spec, doc.get("components", {})))
    return found


def hidden_routes(app: Any) -> list[tuple[str, str]]:
    """Routes left out of the documents (the docs pages, the web page): public or not, they are checked too."""
    from starlette.routing import Mount

    found = []
    for prefix, sub in _mounts(app):
        for route in _routes(sub):
            if isinstance(getattr(route, "original_route", route), Mount) or not route.methods:
                continue
            if getattr(route, "include_in_schema", False):
                continue
            found += [(m, prefix + route.path) for m in sorted(route.methods) if m != "HEAD"]
    return found


_OPS: list[Operation] | None = None
_HIDDEN: list[tuple[str, str]] = []


def _collected() -> tuple[list[Operation], list[tuple[str, str]]]:
    """The operations and hidden routes, read once at collection from an app built on a scratch folder.

    Parametrizing needs them before any fixture runs; that app has the same routes as the `app` fixture
    (test_the_matrix_covers_the_app_under_test checks it), and building it touches nothing.
    """
    global _OPS, _HIDDEN
    if _OPS is None:
        from app.core.settings import Settings
        from app.main import create_app

        with tempfile.TemporaryDirectory(prefix="authz-collect-") as scratch:
            app = create_app(Settings(data_dir=Path(scratch)))
            _OPS, _HIDDEN = operations(app), hidden_routes(app)
    return _OPS, _HIDDEN


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not {"operation", "route", "protected", "call"} & set(metafunc.fixturenames):
        return
    ops, hidden = _collected()
    if "call" in metafunc.fixturenames:
        calls = [(op, ref) for op in ops for ref in references(op)]
        metafunc.parametrize("call", calls, ids=[f"{op.method} {op.path} [{ref.label}]" for op, ref in calls])
    elif {"route", "protected"} & set(metafunc.fixturenames):
        name = "route" if "route" in metafunc.fixturenames else "protected"
        routes = [(op.method, op.path) for op in ops] + hidden
        if name == "protected":
            routes = [r for r in routes if r not in PUBLIC]
        metafunc.parametrize(name, routes, ids=[f"{m} {p}" for m, p in routes])
    else:  # the reads of one resource
        reads = [op for op in ops if op.method == "GET" and set(op.path_params) - set(_not_ids(op))]
        metafunc.parametrize("operation", reads, ids=[f"{op.method} {op.path}" for op in reads])


# --- the references an operation takes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One way an operation names a resource: `where` gets the owner's value, everything else bob's own."""

    label: str
    where: str  # "path", or a dotted body field: "model_id", "loras.0.file_id", "input.image"
    kind: str  # what it names: "subject", "photo", "model", "file", "file_url", "replicate_model", "version"...


# Body fields (anywhere in a request schema) that name a resource, and what they name.
BODY_REFS: dict[str, list[str]] = {
    "subject_id": ["subject"],
    "model_id": ["model"],
    "file_id": ["file"],
    "image": ["photo", "file"],  # a photo id or an uploaded file's id
    "version": ["version", "version_ref"],  # Replicate: a version id, or owner/name:version
    "destination": ["replicate_model"],  # Replicate: owner/name
}
# Replicate's `input` is free-form (Cog inputs), so the document does not list them: those that name a
# resource, by the body schema they go in.
INPUT_REFS: dict[str, dict[str, list[str]]] = {
    "TrainingCreate": {"input_images": ["file_url"]},
    "PredictionCreate": {"image": ["file_url"], "extra_lora": ["file_url", "replicate_model"]},
}


def _body_ref_fields(op: Operation, schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, kind) for every property of the body that references a resource."""
    found = []
    schema = op.resolve(schema)
    for name, prop in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        for kind in BODY_REFS.get(name, []):
            found.append((dotted, kind))
        if name == "input" and op.replicate:
            inputs = INPUT_REFS.get(schema.get("title", ""), {})
            found += [(f"input.{key}", kind) for key, kinds in inputs.items() for kind in kinds]
        for option in _options(op, prop):
            if option.get("type") == "array" and "items" in option:
                found += _body_ref_fields(op, option["items"], f"{dotted}.0.")
            elif option.get("properties"):
                found += _body_ref_fields(op, option, f"{dotted}.")
    return found


def _options(op: Operation, prop: dict[str, Any]) -> list[dict[str, Any]]:
    prop = op.resolve(prop)
    options = prop.get("anyOf") or prop.get("oneOf") or [prop]
    return [op.resolve(o) for o in options]


# Body fields an operation accepts and ignores: they reference nothing there.
IGNORED: dict[tuple[str, str], set[str]] = {
    # The model in the path runs (its latest version); a `version` in the body is not read, as on Replicate.
    ("POST", "/replicate/v1/models/{owner}/{name}/predictions"): {"version"},
}


def references(op: Operation) -> list[Reference]:
    refs = []
    if set(op.path_params) - set(_not_ids(op)):
        refs.append(Reference("path", "path", "path"))
    body = op.body()
    if body and body[0] == "application/json":
        ignored = IGNORED.get((op.method, op.path), set())
        fields = [(f, kind) for f, kind in _body_ref_fields(op, body[1]) if f not in ignored]
        refs += [Reference(f"{f}={kind}", f, kind) for f, kind in fields]
    return refs


def _not_ids(op: Operation) -> dict[str, str]:
    return NOT_IDS["*"] | NOT_IDS.get((op.method, op.path), {})


# --- the two users and their resources -----------------------------------------------------------------------


@dataclass
class Owner:
    """A user, their key, and one of each of their resources (ids as the API spells them)."""

    id: uuid.UUID
    email: str
    key: str
    ids: dict[str, str] = field(default_factory=dict)  # path parameter name -> value
    refs: dict[str, Any] = field(default_factory=dict)  # reference kind -> value in a body

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _new_user(settings: Any, email: str) -> Owner:
    from app.core.db import session_factory, session_scope
    from app.users.service import create_user

    with session_scope(session_factory(settings)) as session:
        user, key = create_user(session, email=email)
        return Owner(user.id, user.email, key)


def _insert_model(settings: Any, storage: Any, owner: Owner, data: bytes, replicate_model: str | None) -> str:
    """A tiny-sd15 model row and file, as a finished training leaves them (bob's: no need to train twice)."""
    replicated = uuid.UUID(replicate_model) if replicate_model else None
    model_id, _ = insert_model(settings, storage, owner.id, data, name="bob's", replicate_model_id=replicated)
    return str(model_id)


def _ok(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def world(client: Any, settings: Any, make_lora: Any) -> Iterator[tuple[Owner, Owner]]:
    """Alice owns one of everything, made through the API; bob owns a model and a Replicate model of his own."""
    from app.core.settings import get_settings
    from app.core.storage import get_storage

    storage = get_storage(settings)
    # Three photos suffice for a training here; the in-process worker reads get_settings(), the API the app's.
    targets = list({id(s): s for s in (settings, get_settings())}.values())
    saved = [(s, s.min_training_photos) for s in targets]
    for s in targets:
        s.min_training_photos = 3
    run = uuid.uuid4().hex[:6]
    alice = _new_user(settings, f"alice-{run}@example.com")
    bob = _new_user(settings, f"bob-{run}@example.com")
    try:
        _build_alices(client, alice)
        _build_bobs(client, settings, storage, bob, make_lora("sd15", strength=4.0))
        yield alice, bob
    finally:
        for s, value in saved:
            s.min_training_photos = value


def _build_alices(client: Any, alice: Owner) -> None:
    h = alice.headers
    # Replicate: a model, then a training into it from a zip, which makes a subject, photos, a training and a
    # version (a native model) in one go.
    _ok(
        client.post(
            f"{REPLICATE}/v1/models",
            json={"owner": "alice", "name": "face", "visibility": "private", "hardware": "cpu"},
            headers=h,
        ),
        201,
    )
    archive = zip_bytes({n: fixture_bytes(n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")})
    zip_file = _ok(
        client.post(f"{REPLICATE}/v1/files", files={"content": ("photos.zip", archive, "application/zip")}, headers=h),
        201,
    )
    trainer = f"{REPLICATE}/v1/models/lookalike/lora-trainer/versions/tiny-sd15/trainings"
    body = {
        "destination": "alice/face",
        "input": {"input_images": zip_file["urls"]["get"], "consent": True, "steps": 4, "resolution": "64", "seed": 1},
    }
    training = _ok(client.post(trainer, json=body, headers=h), 201)

    def finished() -> dict | None:
        got = _ok(client.get(f"{REPLICATE}/v1/trainings/{training['id']}", headers=h), 200)
        return got if got["status"] in ("succeeded", "failed", "canceled") else None

    done = wait_for(finished, timeout=300, interval=0.5)
    assert done["status"] == "succeeded", done
    native = _ok(client.get(f"/v1/trainings/{training['id']}", headers=h), 200)
    model_id = native["model_id"]
    photos = _ok(client.get(f"/v1/subjects/{native['subject_id']}/photos", headers=h), 200)["items"]
    # A native upload, and a generation with a contact sheet (a two-step strength sweep).
    upload = _ok(
        client.post("/v1/files", files={"content": ("start.jpg", jpeg_bytes(64, 64), "image/jpeg")}, headers=h), 201
    )
    generation = _ok(
        client.post(
            "/v1/generations",
            json={"model_id": model_id, "prompt": "portrait", "seed": 1, "sweep": {"scales": [0.0, 1.0]}},
            headers=h | {"Prefer": "wait=60"},
        ),
        201,
    )
    assert generation["status"] == "succeeded", generation
    version = done["output"]["version"]  # alice/face:<id>
    alice.ids = {
        "subject_id": native["subject_id"],
        "photo_id": photos[0]["id"],
        "training_id": training["id"],
        "model_id": model_id,
        "generation_id": generation["id"],
        "file_id": upload["id"],
        "owner": "alice",
        "name": "face",
        "version_id": version.split(":")[1],
        "prediction_id": generation["id"],
    }
    alice.refs = {
        "subject": native["subject_id"],
        "photo": photos[0]["id"],
        "model": model_id,
        "file": upload["id"],
        "file_url": zip_file["urls"]["get"],
        "replicate_model": "alice/face",
        "version": version.split(":")[1],
        "version_ref": version,
    }
    _settled(client, alice)


def _settled(client: Any, alice: Owner) -> None:
    """Wait for the work that the training and the generation left behind (its email) to finish."""
    from app.core.db import session_factory
    from app.core.settings import get_settings
    from app.db import DeliveryStatus, Notification

    factory = session_factory(get_settings())

    def quiet() -> bool:
        with factory() as session:
            statuses = session.scalars(select(Notification.status).where(Notification.user_id == alice.id)).all()
        return all(s in (DeliveryStatus.sent, DeliveryStatus.failed) for s in statuses)

    wait_for(quiet, timeout=60, interval=0.2)


def _build_bobs(client: Any, settings: Any, storage: Any, bob: Owner, lora: bytes) -> None:
    h = bob.headers
    _ok(
        client.post(
            f"{REPLICATE}/v1/models",
            json={"owner": "bob", "name": "face", "visibility": "private", "hardware": "cpu"},
            headers=h,
        ),
        201,
    )
    from app.core.db import session_factory
    from app.db import ReplicateModel

    with session_factory(settings)() as session:
        replicate_model = session.scalar(select(ReplicateModel.id).where(ReplicateModel.user_id == bob.id))
    model_id = _insert_model(settings, storage, bob, lora, str(replicate_model))
    subject = _ok(
        client.post("/v1/subjects", json={"name": "Bob", "class_word": "man", "consent": True}, headers=h), 201
    )
    archive = zip_bytes({"obama.jpg": fixture_bytes("obama.jpg")})
    zip_file = _ok(
        client.post(f"{REPLICATE}/v1/files", files={"content": ("photos.zip", archive, "application/zip")}, headers=h),
        201,
    )
    bob.ids = {"subject_id": subject["id"], "model_id": model_id, "owner": "bob", "name": "face"}
    bob.refs = {
        "subject": subject["id"],
        "model": model_id,
        "replicate_model": "bob/face",
        "version": uuid.UUID(model_id).hex,
        "version_ref": f"bob/face:{uuid.UUID(model_id).hex}",
        "file_url": zip_file["urls"]["get"],
    }


def _wipe(settings: Any, storage: Any) -> None:
    """Delete every row and object the module made (conftest's per-test wipe is off here: see _clean_slate)."""
    import shutil

    from app.core.db import get_engine
    from app.db.base import Base

    with get_engine(settings).begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "locks":
                conn.execute(table.delete())
    shutil.rmtree(settings.data_dir / "storage", ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_slate() -> None:
    """Replaces conftest's wipe after every test: the world is built once for the module (see _wipe_at_end)."""


@pytest.fixture(scope="module", autouse=True)
def _wipe_at_end(settings: Any) -> Iterator[None]:
    yield
    from app.core.storage import get_storage

    _wipe(settings, get_storage(settings))


# --- requests -----------------------------------------------------------------------------------------------


def _fill(op: Operation, schema: dict[str, Any]) -> Any:
    """A minimal value that the schema accepts: required properties only."""
    schema = op.resolve(schema)
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    options = _options(op, schema)
    schema = next((o for o in options if o.get("type") != "null"), options[0])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            name: EXAMPLES.get(name, _fill(op, prop))
            for name, prop in schema.get("properties", {}).items()
            if name in schema.get("required", [])
        }
    if kind == "array":
        return [_fill(op, schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    return "x" * max(1, schema.get("minLength", 1))


def _set(body: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target: Any = body
    for part, after in zip(parts, parts[1:], strict=False):
        if part.isdigit():
            target = target[int(part)]
            continue
        if part not in target or not isinstance(target[part], (dict, list)):
            target[part] = [{}] if after.isdigit() else {}
        target = target[part]
    target[parts[-1]] = value


@dataclass
class Request:
    method: str
    url: str
    json: Any = None
    files: Any = None


def build(
    op: Operation, *, path_ids: dict[str, str], body_refs: dict[str, Any], where: str | None, target: Any = None
) -> Request:
    """The call: path parameters from `path_ids`, and a body with `where` set to `target`."""
    values = path_ids | _not_ids(op)
    url = op.path
    for name in op.path_params:
        assert name in values, f"{op.method} {op.path}: no value for path parameter {name!r}; add it to the world"
        url = re.sub(r"{" + name + r"(?::[^}]*)?}", str(values[name]), url)
    query = {}
    for param in op.spec.get("parameters", []):
        if param["in"] == "query" and param.get("required"):
            query[param["name"]] = _fill(op, param.get("schema", {}))
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    body = op.body()
    if body is None:
        return Request(op.method, url)
    media, schema = body
    if media == "multipart/form-data":
        files = []
        for name, prop in schema.get("properties", {}).items():
            binary = any(
                o.get("format") == "binary" or o.get("items", {}).get("format") == "binary" for o in _options(op, prop)
            )
            if binary:
                files.append((name, ("probe.jpg", jpeg_bytes(64, 64), "image/jpeg")))
        return Request(op.method, url, files=files)
    payload = _fill(op, schema)
    if op.replicate and "input" in schema.get("properties", {}):
        payload["input"] = {"prompt": "portrait"}  # what every version requires
    for dotted, kind in _body_ref_fields(op, schema):
        if dotted == where:
            continue
        # Fields bob would fill with his own resources, when the operation needs them to get that far.
        needed = dotted.split(".")[0] in (schema.get("required") or []) or dotted in _NEEDED.get(
            (op.method, op.path), ()
        )
        if needed and kind in body_refs:
            _set(payload, dotted, body_refs[kind])
    if where and where != "path":
        _set(payload, where, target)
    return Request(op.method, url, json=payload)


# Reference fields bob fills with his own to reach the check under test (a generation needs a model).
_NEEDED: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/generations"): ("model_id",),
    ("POST", "/replicate/v1/predictions"): ("version",),
}


def send(client: Any, req: Request, headers: dict[str, str]) -> Any:
    return client.request(req.method, req.url, json=req.json, files=req.files, headers=headers)


def assert_not_found(op: Operation, response: Any) -> None:
    where = f"{op.method} {op.path} -> {response.request.url}"
    assert response.status_code == 404, f"{where}: {response.status_code} {response.text}"
    body = response.json()
    if op.replicate:
        assert body["status"] == 404 and body["code"] and body["detail"], f"{where}: {body}"
    else:
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], f"{where}: {body}"
        assert "hint" in body["error"], f"{where}: {body}"


# --- what alice owns, to compare before and after --------------------------------------------------------------


def owned_rows(settings: Any, user_id: uuid.UUID) -> dict[str, list[tuple]]:
    """Every row of every table that belongs to the user: theirs by user_id, or by a foreign key to one of theirs."""
    from app.core.db import get_engine
    from app.db.base import Base

    tables = [t for t in Base.metadata.sorted_tables]
    owned: dict[str, list[dict[str, Any]]] = {}
    with get_engine(settings).connect() as conn:
        everything = {t.name: [dict(r._mapping) for r in conn.execute(t.select())] for t in tables}
    ids: set[Any] = {user_id}
    changed = True
    while changed:
        changed = False
        for table in tables:
            links = [c.name for c in table.columns if c.foreign_keys or c.name == "user_id"]
            rows = owned.setdefault(table.name, [])
            for row in everything[table.name]:
                if row in rows:
                    continue
                if (table.name == "users" and row["id"] == user_id) or any(row.get(c) in ids for c in links):
                    rows.append(row)
                    if "id" in row:
                        ids.add(row["id"])
                    changed = True
    return {name: sorted(json.dumps(r, default=str, sort_keys=True) for r in rows) for name, rows in owned.items()}


def stored_objects(storage: Any) -> dict[str, str]:
    return {key: hashlib.sha256(storage.get(key)).hexdigest() for key in storage.list("users/")}


def snapshot(settings: Any, storage: Any, owner: Owner) -> tuple[Any, Any]:
    return owned_rows(settings, owner.id), stored_objects(storage)


# --- the tests ----------------------------------------------------------------------------------------------


def test_the_matrix_covers_the_app_under_test(app: Any) -> None:
    """The operations parametrized at collection are the `app` fixture's: none is left out."""
    collected, _ = _collected()
    assert {(op.method, op.path) for op in operations(app)} == {(op.method, op.path) for op in collected}
    # Sanity: the matrix is not empty, and it covers both APIs.
    assert any(op.path.startswith("/v1/") for op in collected) and any(op.replicate for op in collected)
    # A public endpoint that is gone leaves the list too.
    routes = {(op.method, op.path) for op in collected} | set(hidden_routes(app))
    assert routes >= PUBLIC, PUBLIC - routes


def test_another_users_resource_answers_404_and_changes_nothing(
    call: tuple[Operation, Reference], client: Any, world: tuple[Owner, Owner], settings: Any
) -> None:
    from app.core.storage import get_storage

    op, ref = call
    alice, bob = world
    storage = get_storage(settings)
    if ref.where == "path":
        req = build(op, path_ids=alice.ids, body_refs=bob.refs, where=None)
    else:
        missing = set(op.path_params) - set(_not_ids(op)) - set(bob.ids)
        assert not missing, f"bob has no {missing} to call {op.path} with; add them to _build_bobs"
        assert ref.kind in alice.refs, f"alice has no {ref.kind!r} to reference; add it to _build_alices"
        req = build(op, path_ids=bob.ids, body_refs=bob.refs, where=ref.where, target=alice.refs[ref.kind])
    before = snapshot(settings, storage, alice)
    response = send(client, req, bob.headers)
    assert_not_found(op, response)
    after = snapshot(settings, storage, alice)
    assert after[1] == before[1], f"{op.method} {op.path}: alice's stored objects changed"
    assert after[0] == before[0], f"{op.method} {op.path}: alice's rows changed"


def test_the_owner_reaches_every_resource_read(operation: Operation, client: Any, world: tuple[Owner, Owner]) -> None:
    """The ids of the matrix are real: alice reads each of them (else a 404 above would prove nothing)."""
    alice, _ = world
    req = build(operation, path_ids=alice.ids, body_refs=alice.refs, where=None)
    if operation.path.endswith("/events"):
        with client.stream("GET", req.url, headers=alice.headers) as response:
            assert response.status_code == 200
        return
    response = send(client, req, alice.headers)
    assert response.status_code == 200, f"{req.url}: {response.status_code} {response.text}"


@pytest.fixture(scope="module")
def revoked_key(settings: Any, client: Any) -> Iterator[str]:
    from app.core.db import session_factory, session_scope
    from app.users.service import revoke_key

    owner = _new_user(settings, f"revoked-{uuid.uuid4().hex[:6]}@example.com")
    with session_scope(session_factory(settings)) as session:
        revoke_key(session, ident=owner.key)
    yield owner.key


def _anonymous_request(route: tuple[str, str]) -> Request:
    method, path = route
    op = next((o for o in _collected()[0] if (o.method, o.path) == route), None)
    if op is None:  # a hidden route: no document says what it takes
        return Request(method, re.sub(r"{([^}:]+)(?::[^}]*)?}", "app.js", path))
    ids = {name: uuid.uuid4().hex for name in op.path_params}
    refs: dict[str, Any] = {k: str(uuid.uuid4()) for k in ("subject", "photo", "model", "file", "version")}
    return build(op, path_ids=ids, body_refs=refs, where=None)


def test_public_endpoints_are_the_listed_ones(route: tuple[str, str], client: Any) -> None:
    response = send(client, _anonymous_request(route), {})
    if route in PUBLIC:
        assert response.status_code == 200, f"{route}: {response.status_code} {response.text[:300]}"
    else:
        assert response.status_code == 401, (
            f"{route} answers {response.status_code} without a key: add it to PUBLIC if that is on purpose"
        )


@pytest.mark.parametrize(
    "authorization",
    ["none", "revoked", "Bearer lk_not-a-key", "Basic dXNlcjpwYXNz", "Bearer", "lk_bare-key-no-scheme"],
)
def test_every_operation_refuses_a_request_without_a_valid_key(
    protected: tuple[str, str], authorization: str, client: Any, revoked_key: str
) -> None:
    route = protected
    headers = {"none": {}, "revoked": {"Authorization": f"Bearer {revoked_key}"}}.get(
        authorization, {"Authorization": authorization}
    )
    response = send(client, _anonymous_request(route), headers)
    assert response.status_code == 401, f"{route}: {response.status_code} {response.text}"
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), response.headers
    body = response.json()
    if route[1].startswith(REPLICATE + "/"):
        assert body["status"] == 401 and body["code"] and body["detail"], body
    else:
        assert body["error"]["code"] and body["error"]["message"] and body["error"]["hint"], body
    if revoked_key:
        assert revoked_key not in response.text
