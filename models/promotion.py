"""The promotion record: the coordinator's signed statement that one model passed its gates.

    MODEL_DIR/promotion.json   canonical JSON: {"record": {...}, "signature": {...}}

One file, written whole or not at all (`trust.files.replace_file`), beside the model and not
listed in its manifest (so `jointcredit verify` of the model is unchanged). The record binds the
SHA-256 of the model's signed manifest, so a promotion copied beside another model is refused;
the signature is the trust store's coordinator key over the record's canonical bytes, so an
edited record or one signed by any other key is refused. The service imports this module (not
the gates, which read training metrics) to check a promotion at start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.errors import TrustError
from jointcredit.trust.files import UnsafeFile, read_regular, replace_file
from jointcredit.trust.manifest import (
    SCHEME,
    read_signature_record,
    signature_record,
    signature_verifies,
)
from jointcredit.trust.store import TrustStore

PROMOTION = "promotion.json"
FORMAT = "jointcredit-promotion/1"
MAX_BYTES = 1 << 20  # a record is a few KiB; anything far larger is not one


@dataclass(frozen=True)
class Promotion:
    record: dict[str, Any]
    key_id: str


def write_promotion(
    model_dir: Path, record: dict[str, Any], coordinator: Ed25519PrivateKey, trust: TrustStore
) -> Path:
    """Sign `record` (which must name the model's manifest digest) and write it atomically."""
    kid = keys.key_id(coordinator)
    if kid != trust.coordinator.key_id:
        raise TrustError(
            f"key {kid} is not the trust store's coordinator key {trust.coordinator.key_id}"
        )
    body = {**record, "format": FORMAT, "signed_by": kid}
    signature = signature_record(coordinator, kid, canonical_json(body))
    path = model_dir / PROMOTION
    replace_file(path, canonical_json({"record": body, "signature": signature}), mode=0o644)
    return path


def read_promotion(model_dir: Path, trust: TrustStore, manifest_sha256: str) -> Promotion:
    """The verified promotion of the model whose signed manifest has `manifest_sha256`; raise
    `TrustError` naming why there is none (missing, malformed, tampered, unknown signer,
    another model's)."""
    path = model_dir / PROMOTION
    try:
        raw = read_regular(path, limit=MAX_BYTES)
    except FileNotFoundError as exc:
        raise TrustError(f"{path}: missing: the model was never promoted") from exc
    except UnsafeFile as exc:
        raise TrustError(str(exc)) from exc
    try:
        outer = json.loads(raw)
        body = outer["record"]
        signature, signer, scheme = read_signature_record(outer["signature"])
        if not isinstance(body, dict):
            raise TypeError("record is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise TrustError(f"{path}: malformed promotion record ({exc})") from exc
    if scheme != SCHEME:
        raise TrustError(f"{path}: unknown signature scheme {scheme!r}")
    if signer != trust.coordinator.key_id:
        raise TrustError(
            f"{path}: signed by key {signer}, not by the coordinator key "
            f"{trust.coordinator.key_id} of the trust store"
        )
    if not signature_verifies(trust.coordinator_public(), signature, canonical_json(body)):
        raise TrustError(
            f"{path}: the coordinator's signature does not verify (the record was changed "
            "after signing, or the signature was)"
        )
    if body.get("format") != FORMAT or body.get("signed_by") != signer:
        raise TrustError(f"{path}: not a {FORMAT} record of key {signer}")
    if body.get("model_manifest_sha256") != manifest_sha256:
        raise TrustError(
            f"{path}: promotes model {body.get('model_manifest_sha256')}, not this one "
            f"({manifest_sha256}): a promotion copied beside another model"
        )
    failed = [g.get("name") for g in body.get("gates", []) if not g.get("passed")]
    if failed or not body.get("gates"):
        raise TrustError(f"{path}: records failed or no gates ({failed})")
    return Promotion(record=body, key_id=signer)
