"""The bank's side of scoring a vertical applicant: one signed query to each feature party's
endpoint (concurrently, one round each, a strict deadline), its signed answer verified.

Each party's outcome is its routing (one side per split) or why there is none:
`unavailable` (down, slow, an answer unsigned, badly signed, from another key, of another
shape), `no_data` (the party says the applicant is not in its data) or `no_consent` (the
party says no valid consent for this query is registered). The decision layer refers every
applicant whose routing is incomplete, naming the parties: it never routes a guess.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import httpx
import numpy as np
from pydantic import ValidationError

from jointcredit.service.vertical_kit import VerticalKit
from jointcredit.service.vertical_party import SIDES_PATH, SidesAnswer, SidesRequest
from jointcredit.service.vertical_wire import (
    NONCE_HEADER,
    Nonces,
    SignatureRefused,
    sign,
    verify,
)

Problem = Literal["unavailable", "no_data", "no_consent"]
MAX_ANSWER = 64 * 2**10  # an answer is a few hundred bytes: one side per split


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class PartyLink:
    """A feature party as the label party's model names it (`party`), the institution whose
    key signs its answers, and its endpoint's base URL."""

    party: str
    institution: str
    url: str
    splits: int  # how many split ids the label party's model refers to
    # A vertical scorecard's feature party: its coarse bins per feature (it answers those).
    n_bins: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Routing:
    # party -> (splits,) bool; a scorecard's party -> (features,) int64 coarse codes
    sides: dict[str, np.ndarray] = field(default_factory=dict)
    problems: dict[str, tuple[Problem, str]] = field(default_factory=dict)  # party -> why
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.problems


class VerticalClient:
    def __init__(
        self,
        kit: VerticalKit,
        parties: list[PartyLink],
        model_ids: dict[str, str],
        *,
        timeout: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: parties in process
    ) -> None:
        if not parties:
            raise ValueError("a vertical model needs at least one feature party's endpoint")
        if set(model_ids) != {p.party for p in parties}:
            raise ValueError("one model id per feature party")
        # Per party: the SHA-256 of its signed part, as the label party's card records it.
        self.kit, self.parties, self.model_ids, self.timeout = kit, parties, model_ids, timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._nonces = Nonces()

    def _http(self) -> httpx.AsyncClient:
        # One pool for the process's life: a TLS handshake per decision would cost more than
        # the decision (kept-alive connections, each verified at its handshake).
        if self._client is None:
            verify = True if self._transport is not None else self.kit.client_context()
            self._client = httpx.AsyncClient(
                timeout=self.timeout, transport=self._transport, verify=verify
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def routing(self, applicant_id: str, consent_id: str | None) -> Routing:
        start = time.perf_counter()
        http = self._http()
        answers = await asyncio.gather(
            *(self._ask(http, p, applicant_id, consent_id) for p in self.parties)
        )
        routing = Routing(seconds=time.perf_counter() - start)
        for p, got in zip(self.parties, answers, strict=True):
            if isinstance(got, np.ndarray):
                routing.sides[p.party] = got
            else:
                routing.problems[p.party] = got
        return routing

    @staticmethod
    async def _exchange(
        http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, httpx.Headers, bytes]:
        """POST, reading at most MAX_ANSWER bytes of the answer (a hostile party's endless
        body is cut off, not buffered)."""
        async with http.stream("POST", url, content=body, headers=headers) as r:
            content = bytearray()
            async for chunk in r.aiter_bytes():
                content += chunk
                if len(content) > MAX_ANSWER:
                    raise _TooLarge
            return r.status_code, r.headers, bytes(content)

    async def _ask(
        self, http: httpx.AsyncClient, p: PartyLink, applicant_id: str, consent_id: str | None
    ) -> np.ndarray | tuple[Problem, str]:
        model = self.model_ids[p.party]
        query = SidesRequest(applicant_id=applicant_id, consent_id=consent_id, model=model)
        body = query.model_dump_json().encode()
        headers = sign(self.kit.signing_key, SIDES_PATH, body)
        headers["Content-Type"] = "application/json"
        headers["Accept-Encoding"] = "identity"  # the signed bytes, as sent
        url = p.url.rstrip("/") + SIDES_PATH
        try:
            # The deadline covers the whole exchange, connection included.
            status, answer_headers, content = await asyncio.wait_for(
                self._exchange(http, url, body, headers), self.timeout
            )
        except TimeoutError:
            return "unavailable", f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            return "unavailable", f"unreachable ({type(exc).__name__})"
        except _TooLarge:
            return "unavailable", "an answer too large"
        try:
            verify(
                self.kit.trust, answer_headers, SIDES_PATH, content, self._nonces,
                expected=p.institution, answering=(headers[NONCE_HEADER], status),
            )  # fmt: skip
        except SignatureRefused as exc:
            return "unavailable", f"answer refused: {exc.code}"
        if status not in (200, 403, 404):
            return "unavailable", f"refused the query ({status})"
        try:
            answer = SidesAnswer.model_validate_json(content)
        except ValidationError:
            return "unavailable", "a malformed answer"
        if answer.party != p.party or answer.model != model:
            return "unavailable", "an answer for another party or model"
        if answer.status == "not_found" and status == 404:
            return "no_data", "the applicant is not in its data"
        if answer.status == "consent_required" and status == 403:
            return "no_consent", answer.consent_problem or "no consent"
        if answer.status == "not_label_party" and status == 403:
            return "unavailable", "its part was trained for another label party"
        if answer.status != "found" or status != 200:
            return "unavailable", "an answer that does not match its status"
        if p.n_bins is not None:
            return _codes(answer.codes, p.n_bins)
        if answer.sides is None:
            return "unavailable", "an answer that does not match its status"
        if len(answer.sides) != p.splits:
            return "unavailable", f"{len(answer.sides)} sides for {p.splits} splits"
        left: np.ndarray = np.frombuffer(answer.sides.encode(), dtype=np.uint8) == ord("L")
        return left


def _codes(codes: list[int] | None, n_bins: tuple[int, ...]) -> np.ndarray | tuple[Problem, str]:
    """A scorecard party's coarse codes: one per feature, each within its coarse bins."""
    if codes is None or len(codes) != len(n_bins):
        return (
            "unavailable",
            f"{0 if codes is None else len(codes)} codes for {len(n_bins)} features",
        )
    # Compared as Python ints first: a code past int64 would raise in np.asarray, not refer.
    if any(not 0 <= c < n for c, n in zip(codes, n_bins, strict=True)):
        return "unavailable", "a code outside its feature's bins"
    return np.asarray(codes, dtype=np.int64)
