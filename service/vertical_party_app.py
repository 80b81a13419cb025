"""The feature party's scoring endpoint (`jointcredit vertical serve`), over mutual TLS:

    POST /v1/vertical/sides   a signed query -> a signed answer (service/vertical_party.py)
    GET  /healthz             liveness, naming the party

A query must carry a valid signature of another institution of the federation
(service/vertical_wire.py); a refused one gets 401 with the reason code and is logged, not
chained (unauthenticated input must not grow the audit log). Every answer, refusals too, is
signed with the party's key and bound to the query's nonce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError

from jointcredit.service.loader import freeze_start_up
from jointcredit.service.middleware import BodyLimit
from jointcredit.service.vertical_kit import VerticalKit
from jointcredit.service.vertical_party import (
    MAX_SIDES_BODY,
    SIDES_PATH,
    FeaturePartyEndpoint,
    SidesRequest,
)
from jointcredit.service.vertical_wire import NONCE_HEADER, Nonces, SignatureRefused, sign, verify

log = logging.getLogger(__name__)


@dataclass
class _State:
    endpoint: FeaturePartyEndpoint
    kit: VerticalKit
    nonces: Nonces


def _signed(state: _State, status: int, body: bytes, nonce: str) -> Response:
    headers = sign(state.kit.signing_key, SIDES_PATH, body, answering=(nonce, status))
    return Response(body, status, headers, media_type="application/json")


def _refusal(state: _State, status: int, code: str, detail: str, nonce: str) -> Response:
    body = f'{{"detail":"{code}","reason":{_json_text(detail)}}}'.encode()
    return _signed(state, status, body, nonce)


def _json_text(value: str) -> str:
    import json

    return json.dumps(value[:300])


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    freeze_start_up()
    yield
    app.state.vertical.endpoint.audit.close()


def party_app(endpoint: FeaturePartyEndpoint, kit: VerticalKit) -> FastAPI:
    app = FastAPI(
        title=f"jointcredit vertical scoring endpoint ({kit.institution})",
        docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan,
    )  # fmt: skip
    state = _State(endpoint, kit, Nonces())
    app.state.vertical = state
    app.add_middleware(BodyLimit, limit=MAX_SIDES_BODY)

    @app.post(SIDES_PATH)
    async def sides(request: Request) -> Response:
        nonce = request.headers.get(NONCE_HEADER, "")[:32]
        body = await request.body()
        try:
            signed = verify(kit.trust, request.headers, SIDES_PATH, body, state.nonces)
        except SignatureRefused as exc:
            log.warning("refused a vertical query: %s", exc)
            return _refusal(state, 401, exc.code, str(exc), nonce)
        if signed.institution == kit.institution:
            return _refusal(state, 401, "wrong-party", "signed with this party's own key", nonce)
        try:
            query = SidesRequest.model_validate_json(body)
        except ValidationError:
            return _refusal(state, 422, "invalid", "not a sides query", nonce)
        # Consent read and audit append off the event loop; chained before the answer leaves.
        status, answer = await asyncio.to_thread(
            endpoint.handle, signed.institution, signed.key_id, signed.nonce, query
        )
        # A trees' answer as before (no `codes` key); a scorecard's carries its codes.
        text = answer.model_dump_json(exclude={"codes"} if answer.codes is None else None)
        return _signed(state, status, text.encode(), signed.nonce)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "party": endpoint.served.part.party}

    return app
