"""How errors leave the service: 422 naming each field and the reason, 404 and 409 with a
sentence, anything unexpected a bare 500 with an error id (logged with its traceback, never
sent). The use cases raise `NotFound`, `Conflict` and `Invalid`; FastAPI's request validation
errors take the 422 path too."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from jointcredit.service.limits import TooManyReads
from jointcredit.service.schemas import collapse_errors
from jointcredit.service.sqlite import LockTimeout

log = logging.getLogger("jointcredit.service")


class NotFound(LookupError):
    """No such decision for the caller (another institution's id is not found either, so ids
    cannot be probed)."""


class Conflict(RuntimeError):
    pass


class Invalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def parse(raw: bytes, model: type[BaseModel]) -> Any:
    """A body validated straight from its JSON bytes by pydantic-core's parser (FastAPI's
    json.loads + validate_python is several times slower per applicant); errors, a body that is
    not JSON or not UTF-8 included, take the same 422 path as FastAPI's own."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    request.app.state.metrics.error(422)
    errors = collapse_errors(exc.errors())
    detail = [{"field": _field(loc), "reason": msg} for loc, msg in errors]
    return JSONResponse({"detail": detail[:50]}, 422)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    return JSONResponse({"detail": [{"field": exc.field, "reason": exc.reason}]}, 422)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, 404)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, 409)


# A stuck audit lock is not cleared by retrying at once.
RETRY_AFTER_LOCKED = 5


async def _audit_locked(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LockTimeout)
    log.warning("audit log not writable: %s", exc)
    request.app.state.metrics.error(503)
    detail = ("the audit log cannot be written at the moment (its write lock is held "
              "elsewhere): nothing was recorded and no decision is given; retry later")  # fmt: skip
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": str(RETRY_AFTER_LOCKED)})


async def _too_many(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyReads)
    request.app.state.metrics.error(429)
    return JSONResponse({"detail": str(exc)}, 429, headers={"Retry-After": str(exc.retry_after)})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.exception("unexpected error %s", error_id, exc_info=exc)
    request.app.state.metrics.error(500)
    return JSONResponse({"detail": "internal error", "error_id": error_id}, 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(LockTimeout, _audit_locked)
    app.add_exception_handler(TooManyReads, _too_many)
    app.add_exception_handler(Exception, _unexpected)
