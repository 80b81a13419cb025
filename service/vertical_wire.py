"""The signed exchange between the bank's eligibility service and a feature party's scoring
endpoint (`jointcredit vertical serve`): both directions carry an Ed25519 signature by a key
of the federation's trust store over the exact body bytes, a time and a fresh nonce.

Headers (`X-Jointcredit-Vertical-*`): `Key` (the signer's key id), `Time` (Unix seconds),
`Nonce` (32 hex digits), `Signature` (base64). What is signed, each part length-prefixed so
no two messages share an encoding: the protocol's name, the direction (`request` /
`response`), the request path, for an answer the request's nonce and its HTTP status, then
the time, the nonce and the body's SHA-256. An answer is so bound to the one request it
answers: a recorded answer replayed to another request fails its signature.

A receiver refuses, with a reason code: `unsigned` (a header absent), `malformed-signature`,
`unknown-key`, `revoked-key`, `wrong-party` (a valid key of another institution than the one
expected), `stale` (a time more than `MAX_SKEW` seconds from its clock), `replayed` (a nonce
seen within that window), `bad-signature` (the bytes or any bound field changed).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jointcredit.trust import keys
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import TrustStore

PROTOCOL = b"jointcredit-vertical/1"
KEY_HEADER = "X-Jointcredit-Vertical-Key"
TIME_HEADER = "X-Jointcredit-Vertical-Time"
NONCE_HEADER = "X-Jointcredit-Vertical-Nonce"
SIGNATURE_HEADER = "X-Jointcredit-Vertical-Signature"
HEADERS = (KEY_HEADER, TIME_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
MAX_SKEW = 30  # seconds between a message's time and the receiver's clock
MAX_NONCES = 1_000_000  # remembered at once; beyond that new messages are refused

_KEY_ID = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"[0-9]{1,12}")  # ASCII digits only
_NONCE = re.compile(r"[0-9a-f]{32}")
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{86}==")  # 64 bytes


class SignatureRefused(ValueError):
    """A message whose signature does not hold; `code` says why (module docstring)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class Signed:
    """A verified message's signer and nonce."""

    institution: str
    key_id: str
    nonce: str


def _message(parts: tuple[bytes, ...]) -> bytes:
    out = bytearray()
    for part in (PROTOCOL, *parts):
        out += len(part).to_bytes(8, "big") + part
    return bytes(out)


def _bound(direction: str, path: str, when: str, nonce: str, body: bytes,
           answering: tuple[str, int] | None) -> bytes:  # fmt: skip
    extra: tuple[bytes, ...] = ()
    if answering is not None:
        extra = (answering[0].encode(), str(answering[1]).encode())
    digest = hashlib.sha256(body).digest()
    return _message(
        (direction.encode(), path.encode(), *extra, when.encode(), nonce.encode(), digest)
    )


def sign(
    key: Ed25519PrivateKey, path: str, body: bytes, *, answering: tuple[str, int] | None = None
) -> dict[str, str]:
    """The headers that sign `body` sent to (or, with `answering` = (the request's nonce, the
    answer's status), answered at) `path`."""
    when, nonce = str(int(time.time())), secrets.token_hex(16)
    direction = "request" if answering is None else "response"
    signature = key.sign(_bound(direction, path, when, nonce, body, answering))
    return {
        KEY_HEADER: keys.key_id(key),
        TIME_HEADER: when,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
    }


class Nonces:
    """Nonces seen within the last `MAX_SKEW` seconds (older messages are refused as stale
    anyway, so forgetting them is safe); bounded, thread-safe."""

    def __init__(self, limit: int = MAX_NONCES) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def fresh(self, nonce: str, at: float) -> bool:
        """Remember `nonce`; False when it was seen (or nothing more can be remembered)."""
        with self._lock:
            while self._seen:
                oldest, when = next(iter(self._seen.items()))
                if when > at - 2 * MAX_SKEW:
                    break
                del self._seen[oldest]
            if nonce in self._seen or len(self._seen) >= self.limit:
                return False
            self._seen[nonce] = at
            return True


def verify(
    trust: TrustStore,
    headers: Mapping[str, str],
    path: str,
    body: bytes,
    nonces: Nonces,
    *,
    expected: str | None = None,
    answering: tuple[str, int] | None = None,
    at: float | None = None,
) -> Signed:
    """Check a message's signature headers against the trust store; `expected`: the only
    institution whose key may sign it (None: any institution of the federation). Raises
    `SignatureRefused`. Cheap checks first: nothing is hashed for a malformed header."""
    at = time.time() if at is None else at
    found = {h: headers.get(h) for h in HEADERS}
    if any(v is None for v in found.values()):
        missing = ", ".join(h for h, v in found.items() if v is None)
        raise SignatureRefused("unsigned", f"no {missing}")
    key_id, when, nonce, signature = (str(found[h]) for h in HEADERS)
    if not (_KEY_ID.fullmatch(key_id) and _TIME.fullmatch(when) and _NONCE.fullmatch(nonce)
            and _SIGNATURE.fullmatch(signature)):  # fmt: skip
        raise SignatureRefused("malformed-signature", "a signature header of the wrong form")
    owner = trust.find(key_id)
    if owner is None:
        raise SignatureRefused("unknown-key", f"key {key_id} is not in the trust store")
    institution, entry = owner
    if entry.revoked:
        raise SignatureRefused("revoked-key", f"key {key_id} of {institution} is revoked")
    if expected is not None and institution != expected:
        raise SignatureRefused("wrong-party", f"signed by {institution}, expected {expected}")
    if abs(at - int(when)) > MAX_SKEW:
        raise SignatureRefused("stale", f"signed more than {MAX_SKEW} s from this clock")
    try:
        public = keys.public_from_b64(entry.public_key)
    except TrustError as exc:
        raise SignatureRefused("unknown-key", str(exc)) from exc
    direction = "request" if answering is None else "response"
    message = _bound(direction, path, when, nonce, body, answering)
    if not keys.verify(public, base64.b64decode(signature), message):
        raise SignatureRefused("bad-signature", "the signature does not match the message")
    # Only a verified message uses up its nonce: a forger cannot burn a real one.
    if not nonces.fresh(nonce, at):
        raise SignatureRefused("replayed", f"nonce {nonce} was already used")
    return Signed(institution, key_id, nonce)
