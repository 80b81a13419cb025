"""Signed directories: a manifest listing each file's SHA-256 plus whatever the producer wants
to vouch for (training config, metrics, accepted update digests...), signed by the coordinator.

    manifest.json   canonical JSON: {"format", "files": {name: sha256}, "trust_store_sha256",
                    "signed_by", ...body}
    manifest.sig    canonical JSON: {"scheme": "ed25519", "key_id", "signature": base64}

The signature covers the exact bytes of manifest.json, which covers every listed file by
digest, so changing any byte anywhere is caught and named.

A directory can instead be signed by one institution's key (`institution=`: a vertical
federation's parties each sign their own part of a model); it then verifies only against an
active key of that institution in the coordinator-signed trust store, so a part signed by
another party, or by a revoked key, is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.errors import TrustError
from jointcredit.trust.files import UnsafeFile, read_regular
from jointcredit.trust.store import TrustStore

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = "jointcredit-manifest/1"
SCHEME = "ed25519"


@dataclass(frozen=True)
class Verified:
    manifest: dict[str, Any]
    key_id: str
    same_trust_store: bool  # False: signed under another version of the trust store
    # The bytes that were checked: use these, never re-read the files (no swap after the check).
    contents: dict[str, bytes]
    manifest_sha256: str = ""  # the artifact's version: SHA-256 of the signed manifest


def sign_directory(
    directory: Path,
    files: list[str],
    body: dict[str, Any],
    coordinator: Ed25519PrivateKey,
    store: TrustStore,
    *,
    institution: str | None = None,
) -> dict[str, Any]:
    """Sign with the coordinator's key, or with `institution`'s (then `coordinator` is that
    institution's key, which must be one of its active keys in `store`)."""
    kid = keys.key_id(coordinator)
    if institution is None and kid != store.coordinator.key_id:
        raise TrustError(f"key {kid} is not the trust store's coordinator key")
    if institution is not None and kid not in {e.key_id for e in store.active_keys(institution)}:
        raise TrustError(f"key {kid} is not an active key of {institution} in the trust store")
    reserved = {"format", "files", "trust_store_sha256", "signed_by"} & set(body)
    if reserved:
        raise ValueError(f"manifest body may not set {sorted(reserved)}")
    digests = {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in files}
    manifest = {
        **body,
        "format": FORMAT,
        "files": dict(sorted(digests.items())),
        "trust_store_sha256": store.digest(),
        "signed_by": kid,
    }
    data = canonical_json(manifest)
    (directory / MANIFEST).write_bytes(data)
    (directory / SIGNATURE).write_bytes(canonical_json(signature_record(coordinator, kid, data)))
    return manifest


def signature_record(key: Ed25519PrivateKey, key_id: str, data: bytes) -> dict[str, str]:
    """`key`'s detached signature of `data` as stored (a manifest's, a promotion record's):
    the scheme, the signer's key id and the signature in base64."""
    return {
        "scheme": SCHEME,
        "key_id": key_id,
        "signature": base64.b64encode(key.sign(data)).decode(),
    }


def read_signature_record(sig: Any) -> tuple[bytes, str, str]:
    """A stored signature record's signature, signer key id and scheme; raises `ValueError`,
    `KeyError` or `TypeError` when it is malformed (the caller names the file)."""
    signature = base64.b64decode(str(sig["signature"]), validate=True)
    return signature, str(sig["key_id"]), str(sig["scheme"])


def signature_verifies(public: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    return len(signature) == keys.SIGNATURE_BYTES and keys.verify(public, signature, data)


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular(path)
    except FileNotFoundError as exc:
        raise TrustError(f"{path}: missing ({what})") from exc
    except UnsafeFile as exc:
        raise TrustError(f"{exc} ({what})") from exc


def verify_directory(
    directory: Path, store: TrustStore, *, institution: str | None = None
) -> Verified:
    """Check the coordinator's signature (or, with `institution`, the signature of one of that
    institution's active keys) and every file digest; raise naming what failed."""
    if not directory.is_dir():
        raise TrustError(f"{directory}: not a directory")
    data = _read(directory / MANIFEST, "the directory is not signed")
    raw_sig = _read(directory / SIGNATURE, "the manifest has no signature")
    try:
        signature, signer, scheme = read_signature_record(json.loads(raw_sig))
    except (ValueError, KeyError, TypeError) as exc:
        raise TrustError(f"{directory / SIGNATURE}: malformed signature file ({exc})") from exc
    if scheme != SCHEME:
        raise TrustError(f"{directory / SIGNATURE}: unknown scheme {scheme!r}")
    public = _signer_key(directory, store, signer, institution)
    who = "the coordinator's" if institution is None else f"{institution}'s"
    if not signature_verifies(public, signature, data):
        raise TrustError(
            f"{directory / SIGNATURE}: {who} signature over {MANIFEST} does not "
            f"verify ({MANIFEST} was changed after signing, or the signature was)"
        )
    try:
        manifest: dict[str, Any] = json.loads(data)
        files: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:  # signed but unreadable: a producer bug
        raise TrustError(f"{directory / MANIFEST}: malformed manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise TrustError(f"{directory / MANIFEST}: format {manifest.get('format')!r}")
    contents: dict[str, bytes] = {}
    for name, expected in sorted(files.items()):
        if Path(name).name != name:  # a signed manifest never points outside its directory
            raise TrustError(f"{directory / MANIFEST}: file name {name!r} leaves the directory")
        contents[name] = _read(directory / name, "listed in the manifest")
        actual = hashlib.sha256(contents[name]).hexdigest()
        if actual != expected:
            raise TrustError(
                f"{directory / name}: SHA-256 {actual} does not match the signed manifest "
                f"({expected})"
            )
    return Verified(
        manifest=manifest,
        key_id=signer,
        same_trust_store=manifest.get("trust_store_sha256") == store.digest(),
        contents=contents,
        manifest_sha256=hashlib.sha256(data).hexdigest(),
    )


def _signer_key(
    directory: Path, store: TrustStore, signer: str, institution: str | None
) -> Ed25519PublicKey:
    if institution is None:
        if signer != store.coordinator.key_id:
            raise TrustError(
                f"{directory / SIGNATURE}: signed by key {signer}, not by the coordinator key "
                f"{store.coordinator.key_id} of the trust store"
            )
        return store.coordinator_public()
    for entry in store.active_keys(institution):
        if entry.key_id == signer:
            return keys.public_from_b64(entry.public_key)
    found = store.find(signer)
    owner = "no one in the trust store" if found is None else found[0]
    if found is not None and found[0] == institution:
        owner = f"{institution}, revoked"
    raise TrustError(
        f"{directory / SIGNATURE}: signed by key {signer} ({owner}), not by an active key "
        f"of {institution}"
    )
