"""Signed replies: what an institution signs and how the coordinator checks it.

Flower's node authentication proves which node opened a connection; it signs a timestamp, not
the payload. Nothing in Flower signs the update itself, so this module does (hand-written for
that reason, on `cryptography`'s Ed25519).

What is signed: every item of the reply's content (each array's name, dtype, shape,
serialisation type and bytes, i.e. exactly what the strategy deserialises and aggregates; each
metric and config value with its type), each item hashed on its own so a rejection can name
the item that changed, bound to the run id, server round, node id, institution, message type
and a fresh random nonce. The signature record travels in the reply as a ConfigRecord.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass
from enum import StrEnum
from hashlib import sha256
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from jointcredit.trust import keys
from jointcredit.trust.store import TrustStore

if TYPE_CHECKING:
    from hashlib import _Hash

SIGNATURE_RECORD = "jc-signature"
IDENTITY_RECORD = "identity"  # every reply's ConfigRecord {"institution": id}
SCHEME = "jointcredit-update/1"


class Field:
    """The fields of the signature record (plain strings: record keys must be `str`)."""

    SCHEME: Final = "scheme"
    KEY_ID: Final = "key-id"
    INSTITUTION: Final = "institution"
    RUN_ID: Final = "run-id"
    SERVER_ROUND: Final = "server-round"
    NODE_ID: Final = "node-id"
    MESSAGE_TYPE: Final = "message-type"
    NONCE: Final = "nonce"
    PARTS: Final = "parts"
    PART_DIGESTS: Final = "part-digests"
    DIGEST: Final = "digest"
    SIGNATURE: Final = "signature"
    SIGN_SECONDS: Final = "sign-seconds"


NONCE_BYTES = 16
DOMAIN = b"jointcredit-update/1\x00"


def _put(h: _Hash, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def _encode_value(value: object) -> bytes:
    # bool before int: bool is an int subclass, and True must not equal 1 here.
    if isinstance(value, bool):
        return b"B" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"i" + str(value).encode()
    if isinstance(value, float):
        return b"f" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"s" + value.encode()
    if isinstance(value, bytes):
        return b"b" + value
    if isinstance(value, list):
        out = b"L" + len(value).to_bytes(8, "big")
        for v in value:
            enc = _encode_value(v)
            out += len(enc).to_bytes(8, "big") + enc
        return out
    raise TypeError(f"cannot sign a value of type {type(value).__name__}")


def _array_digest(array: Array) -> bytes:
    h = sha256()
    _put(h, str(array.dtype).encode())
    _put(h, json.dumps(list(array.shape)).encode())
    _put(h, str(array.stype).encode())
    _put(h, bytes(array.data))
    return h.digest()


def content_parts(content: RecordDict) -> dict[str, bytes]:
    """One digest per content item, keyed `array:<record>:<name>`, `metric:...`, `config:...`;
    the signature record itself is left out."""
    # One pass over `items()`: RecordDict's typed views (`array_records`, ...) copy the dict
    # on every access, which cost more than the hashing.
    parts: dict[str, bytes] = {}
    for rname, record in content.items():
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                parts[f"array:{rname}:{key}"] = _array_digest(array)
        elif isinstance(record, MetricRecord):
            for key, metric in record.items():
                parts[f"metric:{rname}:{key}"] = sha256(_encode_value(metric)).digest()
        elif isinstance(record, ConfigRecord):
            if rname == SIGNATURE_RECORD:
                continue
            for key, value in record.items():
                parts[f"config:{rname}:{key}"] = sha256(_encode_value(value)).digest()
        else:  # a record type this format does not know cannot be vouched for
            raise TypeError(f"cannot sign record {rname!r} of type {type(record).__name__}")
    return dict(sorted(parts.items()))


@dataclass(frozen=True)
class Binding:
    """Where a reply belongs: a signature is valid for this run, round, node and kind only."""

    run_id: int
    server_round: int
    node_id: int
    institution: str
    message_type: str
    nonce: bytes


def update_digest(parts: dict[str, bytes], binding: Binding) -> bytes:
    h = sha256(DOMAIN)
    for value in (
        str(binding.run_id),
        str(binding.server_round),
        str(binding.node_id),
        binding.institution,
        binding.message_type,
    ):
        _put(h, value.encode())
    _put(h, binding.nonce)
    for name in sorted(parts):
        _put(h, name.encode())
        _put(h, parts[name])
    return h.digest()


def sign_content(content: RecordDict, binding: Binding, key: Ed25519PrivateKey) -> ConfigRecord:
    """The signature record for `content` (the caller adds it under `SIGNATURE_RECORD`)."""
    started = time.perf_counter()
    parts = content_parts(content)
    digest = update_digest(parts, binding)
    signature = key.sign(DOMAIN + digest)
    return ConfigRecord(
        {
            Field.SCHEME: SCHEME,
            Field.KEY_ID: keys.key_id(key),
            Field.INSTITUTION: binding.institution,
            # uint64 ids as text: ConfigRecord ints are signed 64-bit.
            Field.RUN_ID: str(binding.run_id),
            Field.SERVER_ROUND: binding.server_round,
            Field.NODE_ID: str(binding.node_id),
            Field.MESSAGE_TYPE: binding.message_type,
            Field.NONCE: binding.nonce,
            Field.PARTS: list(parts),
            Field.PART_DIGESTS: list(parts.values()),
            Field.DIGEST: digest,
            Field.SIGNATURE: signature,
            Field.SIGN_SECONDS: time.perf_counter() - started,
        }
    )


def fresh_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


class Reason(StrEnum):
    UNSIGNED = "unsigned"
    MALFORMED = "malformed-signature"
    UNKNOWN_KEY = "unknown-key"
    REVOKED_KEY = "revoked-key"
    WRONG_INSTITUTION = "wrong-institution"
    BAD_SIGNATURE = "bad-signature"
    REPLAYED = "replayed"
    TAMPERED = "tampered"


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Expected:
    """What the coordinator knows independently of the reply."""

    run_id: int
    server_round: int
    node_id: int  # the node the transport says the reply came from
    message_type: str
    institution: str | None  # the node's institution, once known (None before the query round)


@dataclass(frozen=True)
class Accepted:
    institution: str
    key_id: str
    digest: bytes
    nonce: bytes
    sign_seconds: float


def _field(record: ConfigRecord, name: str, kind: type) -> object:
    if name not in record:
        raise Rejected(Reason.MALFORMED, f"signature record has no {name!r}")
    value = record[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Rejected(Reason.MALFORMED, f"signature field {name!r} is not {kind.__name__}")
    return value


def check_content(content: RecordDict, expected: Expected, store: TrustStore) -> Accepted:
    """Verify a reply's signature record against its content, the trust store and where the
    reply should belong. Raises `Rejected` with the first reason found."""
    record = content.get(SIGNATURE_RECORD)
    if record is None:
        raise Rejected(Reason.UNSIGNED, "the reply carries no signature")
    if not isinstance(record, ConfigRecord):
        raise Rejected(Reason.MALFORMED, "the signature record is not a ConfigRecord")
    if _field(record, Field.SCHEME, str) != SCHEME:
        raise Rejected(Reason.MALFORMED, f"unknown signature scheme {record[Field.SCHEME]!r}")
    key_id = str(_field(record, Field.KEY_ID, str))
    institution = str(_field(record, Field.INSTITUTION, str))
    signature = _field(record, Field.SIGNATURE, bytes)
    digest = _field(record, Field.DIGEST, bytes)
    nonce = _field(record, Field.NONCE, bytes)
    names = _field(record, Field.PARTS, list)
    digests = _field(record, Field.PART_DIGESTS, list)
    assert isinstance(signature, bytes) and isinstance(digest, bytes) and isinstance(nonce, bytes)
    if len(signature) != keys.SIGNATURE_BYTES:
        raise Rejected(Reason.MALFORMED, f"signature is {len(signature)} bytes, Ed25519 needs 64")
    if len(digest) != 32 or len(nonce) != NONCE_BYTES:
        raise Rejected(Reason.MALFORMED, "digest or nonce has the wrong length")
    if not isinstance(names, list) or not isinstance(digests, list) or len(names) != len(digests):
        raise Rejected(Reason.MALFORMED, "part names and digests do not pair up")
    if not all(isinstance(n, str) for n in names) or not all(isinstance(d, bytes) for d in digests):
        raise Rejected(Reason.MALFORMED, "part names or digests have the wrong type")
    try:
        binding = Binding(
            run_id=int(str(_field(record, Field.RUN_ID, str))),
            server_round=int(_field(record, Field.SERVER_ROUND, int)),  # type: ignore[call-overload]
            node_id=int(str(_field(record, Field.NODE_ID, str))),
            institution=institution,
            message_type=str(_field(record, Field.MESSAGE_TYPE, str)),
            nonce=nonce,
        )
    except ValueError as exc:
        raise Rejected(Reason.MALFORMED, f"unreadable binding: {exc}") from exc

    # Whose key, and may it sign for this node?
    found = store.find(key_id)
    if found is None:
        raise Rejected(Reason.UNKNOWN_KEY, f"key {key_id} is not in the trust store")
    owner, entry = found
    if entry.revoked:
        raise Rejected(
            Reason.REVOKED_KEY,
            f"key {key_id} of {owner} was revoked at {entry.revoked_at}"
            + (f" ({entry.revoked_reason})" if entry.revoked_reason else ""),
        )
    if owner != institution:
        raise Rejected(
            Reason.WRONG_INSTITUTION,
            f"signed with {owner}'s key {key_id} but claims to be {institution}",
        )
    if expected.institution is not None and expected.institution != owner:
        raise Rejected(
            Reason.WRONG_INSTITUTION,
            f"node {expected.node_id} is {expected.institution}, but the reply is signed by "
            f"{owner}",
        )

    # Is the signature genuine over what the record says was signed?
    claimed: dict[str, bytes] = dict(zip(names, digests, strict=True))
    if update_digest(claimed, binding) != digest:
        raise Rejected(Reason.MALFORMED, "the digest does not match the signed parts and binding")
    if not keys.verify(keys.public_from_b64(entry.public_key), signature, DOMAIN + digest):
        raise Rejected(
            Reason.BAD_SIGNATURE, f"the signature does not verify under {owner}'s key {key_id}"
        )

    # Genuine; but is it for this run, round, node and message kind?
    for what, got, want in (
        ("run", binding.run_id, expected.run_id),
        ("round", binding.server_round, expected.server_round),
        ("node", binding.node_id, expected.node_id),
        ("message type", binding.message_type, expected.message_type),
    ):
        if got != want:
            raise Rejected(Reason.REPLAYED, f"signed for {what} {got}, this is {what} {want}")

    # And is the content what was signed?
    actual = content_parts(content)
    changed = sorted(n for n in set(actual) & set(claimed) if actual[n] != claimed[n])
    added = sorted(set(actual) - set(claimed))
    removed = sorted(set(claimed) - set(actual))
    if changed or added or removed:
        detail = "; ".join(
            f"{label} {', '.join(items)}"
            for label, items in (("changed", changed), ("added", added), ("removed", removed))
            if items
        )
        raise Rejected(Reason.TAMPERED, f"content differs from what was signed: {detail}")
    seconds = record.get(Field.SIGN_SECONDS, 0.0)
    return Accepted(
        institution=owner,
        key_id=key_id,
        digest=digest,
        nonce=nonce,
        sign_seconds=float(seconds) if isinstance(seconds, int | float) else 0.0,
    )
