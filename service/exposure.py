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

Here: the masking arithmetic and an institution's side (`Institution` over its `Ledger`). The
registry of participants and their keys: service/registry.py; the exchange over HTTP (the
institution's endpoint, the service's client): service/exposure_http.py.

Consequences the protocol enforces: every institution of the registry must answer for the
total to mean anything (one institution down -> no total, and the decision is referred); an
institution answers only a query naming exactly the registry's institutions (with a subset its
share would be masked toward those few only, and two of them colluding could unmask it; with
the whole registry, learning one institution's figure takes all the others colluding, as it
must for any sum), and refuses a query id it has answered before (re-asking could otherwise
cancel masks selectively).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from jointcredit.service.registry import Registry

MODULUS = 2**64
QUERY_ID_HEX = 32

# Share requests are authenticated with an HMAC over their issue time and exact body
# (`request_mac`); an endpoint refuses requests issued more than MAX_AGE seconds from its clock.
MAC_HEADER = "X-Jointcredit-Mac"
ISSUED_HEADER = "X-Jointcredit-Issued-At"
MAX_AGE = 60


class ExposureError(ValueError):
    pass


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


# A share request's body is one query: an id, a pseudonym and up to 1,000 institution ids.
MAX_SHARE_BODY = 256 * 2**10
_ISSUED = re.compile(r"[0-9]{1,12}")  # ASCII digits: `isdigit` also admits "²" and "٣"
_MAC = re.compile(r"[0-9a-f]{64}")
UNSIGNED = "not signed with the federation's request key"


def header_problem(mac: str, issued: str, at: float) -> str | None:
    """Why a share request's headers already rule it out (malformed, or issued more than
    MAX_AGE seconds from `at`), or None; checked before its body is read."""
    if _MAC.fullmatch(mac) is None or _ISSUED.fullmatch(issued) is None:
        return UNSIGNED
    if abs(at - int(issued)) > MAX_AGE:
        return f"request issued more than {MAX_AGE} s from now"
    return None


def request_problem(key: bytes, mac: str, issued: str, body: bytes, at: float) -> str | None:
    """Why a share request may not be answered (malformed or stale headers, or not signed with
    the federation's request key), or None."""
    problem = header_problem(mac, issued, at)
    if problem is not None:
        return problem
    if not hmac.compare_digest(mac.encode(), request_mac(key, int(issued), body).encode()):
        return UNSIGNED
    return None


@dataclass(frozen=True)
class ShareEndpoint:
    """What an institution's endpoint answers with: its side of the protocol and the key that
    authenticates requests."""

    institution: Institution
    key: bytes  # request_key(federation key)
