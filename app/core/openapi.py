"""The OpenAPI document says what the API really answers: every operation's error statuses, in the
one error shape, and the bearer scheme.

FastAPI documents the success answer and a 422 in its own validation shape. The errors every
operation can give follow from what it takes, so they are added here, once, for every operation
(new ones included), instead of by hand on each route:

| the operation | can answer |
|---|---|
| needs an API key | 401 (no, wrong or revoked key), 429 (too many wrong or revoked keys from the address) |
| has a path parameter | 404 (no such thing of yours: another user's id answers the same) |
| takes parameters or a body | 422 (a value out of range, a missing field) |
| takes a body | 400 (unreadable: not JSON, broken multipart), 413 (over the request size limit) |
| takes a JSON body | 415 (not sent as JSON) |

Errors a route has beyond these (a 404 for an id in the body, a 409) are declared on the route with
`errors(...)`.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

WHY = {
    400: "The request could not be read (for example, the body is not valid JSON)",
    401: "No API key, or one that is not valid or was revoked",
    404: "Nothing of yours has this id (another user's ids answer the same)",
    409: "The request conflicts with the current state",
    413: "The request or a file in it is over the size limit",
    415: "The body is not in a type this operation takes",
    422: "A value is missing, malformed or out of range; `fields` lists each",
    429: "Too many requests of this kind for this key: retry after `Retry-After` seconds",
    503: "The service is not ready",
}
# Every operation that needs a key can answer 429 to an address that sent too many wrong or revoked keys.
SIGN_IN_429 = "Too many failed sign-ins (wrong or revoked keys) from this address: retry after `Retry-After` seconds"
RETRY_AFTER: dict[str, Any] = {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="stable, snake_case: what went wrong, for programs")
    message: str = Field(description="what went wrong, for people")
    hint: str | None = Field(default=None, description="what to do about it")


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code", "message", "hint", ...}}`; some add details (e.g. `fields`)."""

    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route's own error statuses, in the error shape: `errors(409, 413)`."""
    return {s: {"model": ErrorBody, "description": WHY.get(s, "Error")} for s in statuses}


def _ref(components: dict[str, Any]) -> dict[str, str]:
    schemas = components.setdefault("schemas", {})
    for name, model in (("ErrorBody", ErrorBody), ("ErrorDetail", ErrorDetail)):
        if name not in schemas:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schema.pop("$defs", None)
            schemas[name] = schema
    return {"$ref": "#/components/schemas/ErrorBody"}


def _error_response(status: int, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": WHY.get(status, "Error"), "content": {"application/json": {"schema": ref}}}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add each operation's implied error answers, and replace FastAPI's validation shape with ours."""
    components = document.setdefault("components", {})
    ref = _ref(components)
    for name, schema in components.get("schemas", {}).items():
        if name.startswith("Body_"):  # multipart forms: before the operations read their `required`
            _files_are_binary(schema)
            _no_null_parts(schema)
    for path, item in document.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            implied: list[int] = []
            if op.get("security"):
                implied.append(401)
                _failed_sign_ins(responses, ref)
            if re.search(r"\{[^}]+\}", path):
                implied.append(404)
            body = op.get("requestBody")
            if op.get("parameters") or body:
                implied.append(422)
            if body:
                implied += [400, 413]
                if "application/json" in body.get("content", {}):
                    implied.append(415)
            form = (body or {}).get("content", {}).get("multipart/form-data")
            if form and components.get("schemas", {}).get(form["schema"].get("$ref", "").rsplit("/", 1)[-1], {}).get(
                "required"
            ):
                body["required"] = True  # a form with a required part cannot be left out
            for status in implied:
                responses.setdefault(str(status), _error_response(status, ref))
            for status, answer in responses.items():
                # FastAPI's own 422 (HTTPValidationError) and any route-declared error: our shape.
                if status.startswith(("4", "5")) and "application/json" in answer.get("content", {}):
                    answer["content"]["application/json"]["schema"] = ref
    schemas = components.get("schemas", {})
    _json_form_fields(document, schemas)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _failed_sign_ins(responses: dict[str, Any], ref: dict[str, str]) -> None:
    """The 429 an operation that needs a key answers after too many failed sign-ins from the address,
    added to the one a rate-limited route declares."""
    answer = responses.get("429")
    if answer is None:
        answer = responses["429"] = {**_error_response(429, ref), "description": SIGN_IN_429}
    elif "failed sign-ins" not in answer.get("description", ""):
        said = answer.get("description", WHY[429]).rstrip(".")
        answer["description"] = f"{said}; also answered after too many failed sign-ins from this address"
    answer.setdefault("headers", {}).setdefault("Retry-After", RETRY_AFTER)


def _files_are_binary(schema: Any) -> None:
    """File fields of a multipart body as OpenAPI tools read them: `format: binary`, never empty.

    FastAPI writes them in JSON Schema's words (`contentMediaType`), which clients and generators
    take for a plain text field.
    """
    if isinstance(schema, dict):
        if schema.get("contentMediaType") == "application/octet-stream":
            schema.update(format="binary", minLength=1)
        for value in schema.values():
            _files_are_binary(value)
    elif isinstance(schema, list):
        for value in schema:
            _files_are_binary(value)


REQUIRED_PART = "x-required-part"  # File(json_schema_extra={REQUIRED_PART: True}): documented as required


def _no_null_parts(schema: dict[str, Any]) -> None:
    """A multipart form cannot send `null`: an optional field is one left out, so drop the `null` branch
    (FastAPI writes `list[UploadFile] | None` as "an array, or null", and clients then send "null")."""
    for prop, spec in schema.get("properties", {}).items():
        if spec.pop(REQUIRED_PART, False):
            # Optional to FastAPI so that the service words the refusal; required in the document.
            schema.setdefault("required", []).append(prop)
            spec["minItems"] = 1
        branches = spec.get("anyOf")
        if branches and {"type": "null"} in branches:
            rest = [b for b in branches if b != {"type": "null"}]
            if len(rest) == 1:
                schema["properties"][prop] = {**{k: v for k, v in spec.items() if k != "anyOf"}, **rest[0]}


JSON_FIELD = "x-json-object"  # Form(json_schema_extra={JSON_FIELD: True}): a multipart part holding a JSON object


def _json_form_fields(document: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A multipart field that carries a JSON object is documented as one, with the part's content type."""
    fields: dict[str, list[str]] = {}
    for name, schema in schemas.items():
        for prop, spec in schema.get("properties", {}).items():
            if spec.pop(JSON_FIELD, False):
                schema["properties"][prop] = {"type": "object", "description": spec.get("description", "")}
                fields.setdefault(f"#/components/schemas/{name}", []).append(prop)
    for item in document.get("paths", {}).values():
        for op in item.values():
            form = (
                (op.get("requestBody") or {}).get("content", {}).get("multipart/form-data")
                if isinstance(op, dict)
                else None
            )
            if form and form.get("schema", {}).get("$ref") in fields:
                encoding = form.setdefault("encoding", {})
                for prop in fields[form["schema"]["$ref"]]:
                    encoding[prop] = {"contentType": "application/json"}


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
