"""The exposure exchange over HTTP: the app each institution runs (`jointcredit exposure
serve`) and the service's client that asks every institution for its share and adds them up.

Every institution of the registry must answer for the total to mean anything: with one down
the masks do not cancel, so the client reports who did not answer instead of a total (and the
decision layer refers the application, service/joint.py).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from fastapi import FastAPI
from pydantic import ValidationError

from jointcredit.service.exposure import (
    ISSUED_HEADER,
    MAC_HEADER,
    MAX_SHARE_BODY,
    MODULUS,
    QUERY_ID_HEX,
    ExposureError,
    Institution,
    ShareEndpoint,
    ShareRequest,
    ShareResponse,
    pseudonym,
    request_key,
    request_mac,
    total_from_shares,
)
from jointcredit.service.middleware import BodyLimit
from jointcredit.service.registry import Registry
from jointcredit.service.routers import exposure


def institution_app(institution: Institution, federation_key: bytes) -> FastAPI:
    """POST /v1/exposure/share -> this institution's masked share; GET /healthz."""
    app = FastAPI(title=f"jointcredit exposure endpoint ({institution.institution})")
    app.state.share_endpoint = ShareEndpoint(institution, request_key(federation_key))
    app.add_middleware(BodyLimit, limit=MAX_SHARE_BODY)
    app.include_router(exposure.router)
    return app


# Secure sums in flight at once across the whole service, singles and batches alike (each
# asks every institution of the registry), so concurrent requests cannot multiply the load.
TOTALS_AT_ONCE = 16


class _RefuseCookies(DefaultCookiePolicy):
    """Stores no cookie: a jar kept for the client's lifetime would let a lender link one
    applicant's query to the next, and a cookie set for a shared parent domain would reach
    the other lenders."""

    def set_ok(self, cookie: object, request: object) -> bool:
        return False


@dataclass(frozen=True)
class ExposureResult:
    total_cents: int | None
    unavailable: dict[str, str]  # institution -> why (no total then)


class ExposureClient:
    """Asks every institution of the registry for its share of one applicant's exposure."""

    def __init__(
        self,
        registry: Registry,
        federation_key: bytes,
        *,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: institutions in-process
    ) -> None:
        self.registry = registry
        self.federation_key = federation_key
        self.timeout = timeout
        self.transport = transport
        self._request_key = request_key(federation_key)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        """The client every query shares: its kept-alive connections spare a TLS handshake
        per lender per applicant. A client's connections belong to the event loop that opened
        them, so another loop (a script's `asyncio.run`) is given a client of its own. Made
        with no await between the check and the assignment: concurrent queries of one loop
        get the same one."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A connection for every lender of every total in flight: with httpx's default
            # pool (100), a queued request's PoolTimeout would read as "unreachable" -> refer.
            pool = TOTALS_AT_ONCE * max(1, len(self.registry.institutions))
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                transport=self.transport,
                limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                cookies=CookieJar(policy=_RefuseCookies()),
                # Lenders are reached directly: no proxy from the environment (it would see
                # every query) and no .netrc credentials sent to them.
                trust_env=False,
            )
            self._loop = loop
        return self._client

    async def close(self) -> None:
        """Close the shared client (the service's shutdown); a later query makes another."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    def outsiders(self, lenders: list[str]) -> list[str]:
        """Lenders that are not institutions of the registry."""
        return sorted(set(lenders) - set(self.registry.institutions))

    async def total(self, applicant_id: str) -> ExposureResult:
        """The federation's total exposure to the applicant, or who failed to answer."""
        query_id = secrets.token_hex(QUERY_ID_HEX // 2)
        request = ShareRequest(
            query_id=query_id,
            pseudonym=pseudonym(self.federation_key, applicant_id),
            participants=sorted(self.registry.institutions),
        )
        body = request.model_dump_json().encode()
        issued = int(time.time())
        headers = {
            "Content-Type": "application/json",
            MAC_HEADER: request_mac(self._request_key, issued, body),
            ISSUED_HEADER: str(issued),
        }

        async def ask(client: httpx.AsyncClient, inst: str) -> int | str:
            url = self.registry.institutions[inst].url.rstrip("/") + "/v1/exposure/share"
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return f"unreachable ({type(exc).__name__})"
            if r.status_code != 200:
                return f"refused ({r.status_code})"
            try:
                answer = ShareResponse.model_validate(r.json())
                value = int(answer.share)
            except (ValueError, ValidationError):
                return "malformed answer"
            matches = answer.institution == inst and answer.query_id == query_id
            if not matches or not 0 <= value < MODULUS:
                return "answer does not match the query"
            return value

        client = self._http()
        answers = await asyncio.gather(*(ask(client, i) for i in request.participants))
        failed = {
            inst: a
            for inst, a in zip(request.participants, answers, strict=True)
            if isinstance(a, str)
        }
        if failed:
            return ExposureResult(None, failed)
        try:
            total = total_from_shares([a for a in answers if isinstance(a, int)])
        except ExposureError as exc:
            return ExposureResult(None, {"*": str(exc)})
        return ExposureResult(total, {})
