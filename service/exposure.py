"""Cross-institution exposure without any lender revealing its own figure.

The applicant is named by a keyed pseudonym, HMAC-SHA256(federation key, applicant id): the
institutions index their ledgers by it, the raw id never travels. Each institution answers with
a masked share of its outstanding exposure (integer cents, modulo 2**64):

    share_i = exposure_i + sum_{j > i} m_ij - sum_{j < i} m_ji        (ids ordered as text)
    m_ij    = PRF(k_ij, query id, pseudonym)

where k_ij is a secret only institutions i and j hold (X25519 key agreement between their
exposure keys, through HKDF). Summing every share cancels every mask: the service learns the
total and nothing else; any one share is uniformly random to it. (Pairwise masking as in Bonawitz
et al., 2017; written here because it is a few lines over `cryptography`'s X25519/HKDF/HMAC, and
no maintained library offers it as an HTTP exchange.)

Consequences the protocol enforces: every institution of the registry must answer for the
total to mean anything (one institution down -> no total, and the decision is referred); an
institution answers only a query naming exactly the registry's institutions (with a subset its
share would be masked toward those few only, and two of them colluding could unmask it; with
the whole registry, learning one institution's figure takes all the others colluding, as it
must for any sum), and refuses a query id it has answered before (re-asking could otherwise
cancel masks selectively).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # module level: FastAPI resolves the endpoint's annotation

from jointcredit.trust.errors import TrustError
from jointcredit.trust.manifest import sign_directory, verify_directory
from jointcredit.trust.store import TrustStore, check_institution_id

if TYPE_CHECKING:
    from fastapi import FastAPI

MODULUS = 2**64
QUERY_ID_HEX = 32


class ExposureError(ValueError):
    pass


# -- keys and the registry --------------------------------------------------------------------


def write_exposure_key(path: Path) -> X25519PublicKey:
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key.public_key()


def load_exposure_key(path: Path) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (FileNotFoundError, ValueError) as exc:
        raise ExposureError(f"{path}: cannot load the exposure key: {exc}") from exc
    if not isinstance(key, X25519PrivateKey):
        raise ExposureError(f"{path}: not an X25519 key")
    return key


def public_b64(key: X25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class RegistryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(pattern=r"^https?://")
    x25519_public: str


class Registry(BaseModel):
    """Who takes part in exposure queries, where they answer, and their exposure keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    federation: str
    institutions: dict[str, RegistryEntry]

    def public(self, institution: str) -> X25519PublicKey:
        raw = base64.b64decode(self.institutions[institution].x25519_public)
        return X25519PublicKey.from_public_bytes(raw)


REGISTRY_FILE = "registry.json"
REGISTRY_KIND = "jointcredit-exposure-registry"


def parse_registry(data: bytes, source: str) -> Registry:
    try:
        registry = Registry.model_validate_json(data)
    except ValidationError as exc:
        raise ExposureError(f"{source}: invalid exposure registry: {exc.errors()[0]}") from exc
    for inst in registry.institutions:
        check_institution_id(inst)
    if len(registry.institutions) < 3:
        raise ExposureError(f"{source}: secure sums need at least 3 institutions")
    return registry


def load_registry(path: Path, trust: TrustStore | None = None) -> Registry:
    """A signed registry directory (verified against the trust store's coordinator key), or,
    for development, a plain registry.json (see `registry_is_signed`).

    Why sign it: an institution computes its masks from the public keys listed here. Whoever
    can swap those keys for their own can remove that institution's masks and read its figure."""
    if path.is_dir():
        if trust is None:
            raise ExposureError(f"{path}: a signed registry needs the trust store to verify it")
        try:
            verified = verify_directory(path, trust)
        except TrustError as exc:
            raise ExposureError(f"{path}: exposure registry does not verify: {exc}") from exc
        if verified.manifest.get("kind") != REGISTRY_KIND or REGISTRY_FILE not in verified.contents:
            raise ExposureError(f"{path}: not a signed exposure registry")
        return parse_registry(verified.contents[REGISTRY_FILE], str(path / REGISTRY_FILE))
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ExposureError(f"{path}: exposure registry not found") from exc
    return parse_registry(data, str(path))


def registry_is_signed(path: Path) -> bool:
    return path.is_dir()


def sign_registry(
    registry_file: Path, out: Path, coordinator: Ed25519PrivateKey, trust: TrustStore
) -> Registry:
    """Write OUT/registry.json (the same bytes) with the coordinator's signed manifest."""
    data = registry_file.read_bytes() if registry_file.is_file() else b""
    registry = parse_registry(data, str(registry_file))
    if registry.federation != trust.federation:
        raise ExposureError(
            f"{registry_file}: registry of federation {registry.federation!r}, "
            f"trust store of {trust.federation!r}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / REGISTRY_FILE).write_bytes(data)
    try:
        sign_directory(
            out, [REGISTRY_FILE], {"kind": REGISTRY_KIND, "federation": registry.federation},
            coordinator, trust,
        )  # fmt: skip
    except TrustError as exc:
        raise ExposureError(str(exc)) from exc
    return registry


def load_federation_key(path: Path) -> bytes:
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError) as exc:
        raise ExposureError(f"{path}: cannot read the federation key (hex): {exc}") from exc
    if len(key) < 32:
        raise ExposureError(f"{path}: the federation key must be at least 32 bytes")
    return key


def new_federation_key() -> str:
    return secrets.token_hex(32)


# -- the protocol -----------------------------------------------------------------------------


def pseudonym(federation_key: bytes, applicant_id: str) -> str:
    return hmac.new(federation_key, applicant_id.encode(), hashlib.sha256).hexdigest()


def request_key(federation_key: bytes) -> bytes:
    """The key that authenticates share requests: derived from the federation key, which only
    the service and the lenders hold (separate from the pseudonym key by HKDF's info)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"jointcredit-exposure/1|request"
    ).derive(federation_key)


def request_mac(key: bytes, issued_at: int, body: bytes) -> str:
    return hmac.new(key, str(issued_at).encode() + b"|" + body, hashlib.sha256).hexdigest()


def pairwise_key(own: X25519PrivateKey, other: X25519PublicKey, a: str, b: str) -> bytes:
    first, second = sorted((a, b))
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"jointcredit-exposure/1|{first}|{second}".encode(),
    ).derive(own.exchange(other))


def mask(key: bytes, query_id: str, pseud: str) -> int:
    digest = hmac.new(key, f"{query_id}|{pseud}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def masked_share(
    institution: str,
    exposure_cents: int,
    participants: list[str],
    pairwise: dict[str, bytes],
    query_id: str,
    pseud: str,
) -> int:
    share = exposure_cents
    for other in participants:
        if other == institution:
            continue
        m = mask(pairwise[other], query_id, pseud)
        share += m if institution < other else -m
    return share % MODULUS


def total_from_shares(shares: list[int]) -> int:
    total = sum(shares) % MODULUS
    if total >= MODULUS // 2:  # a negative total means a participant sent garbage
        raise ExposureError("the shares do not add up to a valid total")
    return total


# -- an institution's side --------------------------------------------------------------------


class ShareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    query_id: str = Field(pattern=rf"^[0-9a-f]{{{QUERY_ID_HEX}}}$")
    pseudonym: str = Field(pattern=r"^[0-9a-f]{64}$")
    participants: list[str] = Field(min_length=3, max_length=1000)


class ShareResponse(BaseModel):
    institution: str
    query_id: str
    share: str  # decimal text: JSON numbers lose precision above 2**53


@dataclass
class Ledger:
    """Outstanding exposure per applicant pseudonym, in cents (the institution's own data)."""

    cents: dict[str, int]

    @classmethod
    def load(cls, path: Path, federation_key: bytes) -> Ledger:
        """JSON {applicant id: amount in dollars}; pseudonymised on load."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError) as exc:
            raise ExposureError(f"{path}: cannot read the ledger: {exc}") from exc
        if not isinstance(raw, dict):
            raise ExposureError(f"{path}: expected an object of applicant id -> amount")
        cents: dict[str, int] = {}
        for applicant, amount in raw.items():
            if not isinstance(amount, int | float) or isinstance(amount, bool) or amount < 0:
                raise ExposureError(f"{path}: {applicant!r}: amount must be a number >= 0")
            cents[pseudonym(federation_key, str(applicant))] = round(float(amount) * 100)
        return cls(cents)


class Institution:
    """Answers share requests for one institution; remembers query ids it has answered."""

    def __init__(
        self, institution: str, key: X25519PrivateKey, registry: Registry, ledger: Ledger
    ) -> None:
        if institution not in registry.institutions:
            raise ExposureError(f"{institution} is not in the exposure registry")
        self.institution = institution
        self.registry = registry
        self.ledger = ledger
        self.pairwise = {
            other: pairwise_key(key, registry.public(other), institution, other)
            for other in registry.institutions
            if other != institution
        }
        self._answered: set[str] = set()

    def share(self, request: ShareRequest) -> ShareResponse:
        members = set(request.participants)
        if len(members) != len(request.participants):
            raise ExposureError("participants repeat")
        if self.institution not in members:
            raise ExposureError("this institution is not among the participants")
        outsiders = sorted(members - set(self.registry.institutions))
        if outsiders:
            raise ExposureError(f"not in the registry: {', '.join(outsiders)}")
        # Only the whole registry: with a subset, this share is masked only toward the named
        # few, and two of them colluding (asking with participants {us, them}) would unmask it.
        absent = sorted(set(self.registry.institutions) - members)
        if absent:
            raise ExposureError(
                f"every institution of the registry must take part (missing: {', '.join(absent)})"
            )
        if request.query_id in self._answered:
            raise ExposureError("query id already answered")
        self._answered.add(request.query_id)
        value = masked_share(
            self.institution,
            self.ledger.cents.get(request.pseudonym, 0),
            request.participants,
            self.pairwise,
            request.query_id,
            request.pseudonym,
        )
        return ShareResponse(
            institution=self.institution, query_id=request.query_id, share=str(value)
        )


# -- over HTTP --------------------------------------------------------------------------------


MAC_HEADER = "X-Jointcredit-Mac"
ISSUED_HEADER = "X-Jointcredit-Issued-At"
MAX_AGE = 60  # seconds a signed request stays valid (clocks of the parties may drift a little)


def institution_app(institution: Institution, federation_key: bytes) -> FastAPI:
    """The endpoint each institution runs: POST /v1/exposure/share -> its masked share.

    Only a holder of the federation key (the service, the lenders) may ask: each request
    carries an HMAC over its issue time and exact body, with a key derived from the federation
    key; unauthenticated, altered or stale requests get 401 and consume no query id."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title=f"jointcredit exposure endpoint ({institution.institution})")
    key = request_key(federation_key)

    @app.post(
        "/v1/exposure/share", response_model=ShareResponse,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": ShareRequest.model_json_schema()}}}},
    )  # fmt: skip
    async def share(request: Request) -> ShareResponse:
        body = await request.body()
        mac, issued = request.headers.get(MAC_HEADER, ""), request.headers.get(ISSUED_HEADER, "")
        if not issued.isdigit() or not hmac.compare_digest(
            mac.encode(), request_mac(key, int(issued), body).encode()
        ):
            raise HTTPException(401, "not signed with the federation's request key")
        if abs(time.time() - int(issued)) > MAX_AGE:
            raise HTTPException(401, f"request issued more than {MAX_AGE} s from now")
        try:
            parsed = ShareRequest.model_validate_json(body)
        except ValidationError as exc:
            raise HTTPException(422, "not a share request") from exc
        try:
            return institution.share(parsed)
        except ExposureError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "institution": institution.institution}

    return app


@dataclass(frozen=True)
class ExposureResult:
    total_cents: int | None
    unavailable: dict[str, str]  # institution -> why (no total then)


async def federation_exposure(
    registry: Registry, federation_key: bytes, applicant_id: str, timeout: float = 2.0
) -> ExposureResult:
    """Ask every institution of the registry for its share; the total or who failed."""
    import asyncio

    import httpx

    query_id = secrets.token_hex(QUERY_ID_HEX // 2)
    request = ShareRequest(
        query_id=query_id,
        pseudonym=pseudonym(federation_key, applicant_id),
        participants=sorted(registry.institutions),
    )
    body = request.model_dump_json().encode()
    issued = int(time.time())
    headers = {
        "Content-Type": "application/json",
        MAC_HEADER: request_mac(request_key(federation_key), issued, body),
        ISSUED_HEADER: str(issued),
    }

    async def ask(client: httpx.AsyncClient, inst: str) -> int | str:
        url = registry.institutions[inst].url.rstrip("/") + "/v1/exposure/share"
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
        if answer.institution != inst or answer.query_id != query_id or not 0 <= value < MODULUS:
            return "answer does not match the query"
        return value

    async with httpx.AsyncClient(timeout=timeout) as client:
        answers = await asyncio.gather(*(ask(client, i) for i in request.participants))
    failed = {
        inst: a for inst, a in zip(request.participants, answers, strict=True) if isinstance(a, str)
    }
    if failed:
        return ExposureResult(None, failed)
    try:
        total = total_from_shares([a for a in answers if isinstance(a, int)])
    except ExposureError as exc:
        return ExposureResult(None, {"*": str(exc)})
    return ExposureResult(total, {})
