"""The OpenAPI schema: FastAPI's, plus the decision request bodies, which are generated per
model and policy and validated by the use case rather than declared on the routes (FastAPI's
documented way of extending the schema), and the error bodies the service really sends
(service/errors.py), declared per route with every status code the route can answer
(`responses`). The attack suite runs schemathesis's checks against it
(tests/attacks/test_openapi_contract.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class Problem(BaseModel):
    field: str = Field(description="the offending field, dotted (e.g. applicant.state)")
    reason: str


class ValidationProblems(BaseModel):
    """A 422: every problem found (at most 50), each naming its field."""

    detail: list[Problem]


class Message(BaseModel):
    """An error that is one sentence."""

    detail: str


class NotReady(BaseModel):
    """`/readyz` when the audit log cannot be written."""

    status: str = Field(description='"not ready"')
    detail: str


class InternalError(BaseModel):
    """Anything unexpected: the error id names the logged traceback (never sent)."""

    detail: str
    error_id: str


_ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    401: (Message, "no valid API key (`Authorization: Bearer <key>`)"),
    404: (Message, "no such decision for the calling institution"),
    409: (Message, "the decision is no longer awaiting review"),
    413: (Message, "the request body is over the limit"),
    422: (ValidationProblems, "the request is invalid: each problem names its field"),
    429: (Message, "this API key's allowance of expensive reads is used up (see Retry-After)"),
    500: (InternalError, "an unexpected error (logged with its error id)"),
    503: (Message, "the audit log cannot be written now (see Retry-After); nothing was decided"),
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route declares (`responses=` of a route decorator), 500 always."""
    return {
        code: {"model": _ERRORS[code][0], "description": _ERRORS[code][1]}
        for code in sorted({*codes, 500})
    }


def json_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses(*codes)` for a route whose own responses are not JSON (its errors are)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code, entry in responses(*codes).items():
        schema = {"$ref": f"#/components/schemas/{entry['model'].__name__}"}
        content = {"application/json": {"schema": schema}}
        out[code] = {"description": entry["description"], "content": content}
    return out


def extend(
    app: FastAPI, bodies: list[type[BaseModel]], examples: Mapping[tuple[str, str], Any]
) -> None:
    """Add the request `bodies`' schemas and, per (method, path), the example of its 200
    response."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in bodies:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            for (method, path), example in examples.items():
                ok = schema["paths"][path][method.lower()]["responses"]["200"]
                ok["content"]["application/json"]["example"] = example
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
