"""The federation trust store: which institution owns which update-signing key, which keys are
revoked, and the coordinator's key, all signed by the coordinator.

The store's own signature makes edits detectable (a key added or un-revoked by hand no longer
verifies). It does not stop someone from replacing the whole file with a store signed by a key
of their own: parties that received the coordinator's key id out of band pin it
(`load_store(..., pin=KEY_ID)`, `--coordinator-key-id`), as deployment kits do.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.errors import TrustError
from jointcredit.trust.files import UnsafeFile, read_regular, replace_file
from jointcredit.trust.ids import RULE, is_institution_id

FORMAT = "jointcredit-trust-store/1"


def check_institution_id(institution: str) -> str:
    if not is_institution_id(institution):
        raise TrustError(f"institution id {institution!r}: {RULE}")
    return institution


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyEntry(_Strict):
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 public key
    added_at: str
    revoked_at: str | None = None
    revoked_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class CoordinatorKey(_Strict):
    key_id: str
    public_key: str


class StoreSignature(_Strict):
    key_id: str
    value: str  # base64 Ed25519 signature over the canonical store without this field


class TrustStore(_Strict):
    format: str = FORMAT
    federation: str
    version: int
    updated_at: str
    coordinator: CoordinatorKey
    institutions: dict[str, list[KeyEntry]]
    signature: StoreSignature | None = None

    def body(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    def digest(self) -> str:
        """SHA-256 of the signed store as written to disk."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def coordinator_public(self) -> Ed25519PublicKey:
        return keys.public_from_b64(self.coordinator.public_key)

    def find(self, key_id: str) -> tuple[str, KeyEntry] | None:
        for institution, entries in self.institutions.items():
            for entry in entries:
                if entry.key_id == key_id:
                    return institution, entry
        return None

    def active_keys(self, institution: str) -> list[KeyEntry]:
        return [e for e in self.institutions.get(institution, []) if not e.revoked]


def sign(store: TrustStore, coordinator: Ed25519PrivateKey) -> TrustStore:
    kid = keys.key_id(coordinator)
    if kid != store.coordinator.key_id:
        raise TrustError(
            f"the key given ({kid}) is not this federation's coordinator key "
            f"({store.coordinator.key_id})"
        )
    unsigned = store.model_copy(update={"signature": None})
    value = base64.b64encode(coordinator.sign(unsigned.body())).decode()
    return unsigned.model_copy(update={"signature": StoreSignature(key_id=kid, value=value)})


def create(federation: str, coordinator: Ed25519PrivateKey) -> TrustStore:
    pub = coordinator.public_key()
    store = TrustStore(
        federation=federation,
        version=1,
        updated_at=_now(),
        coordinator=CoordinatorKey(key_id=keys.key_id(pub), public_key=keys.public_b64(pub)),
        institutions={},
    )
    return sign(store, coordinator)


def add_key(
    store: TrustStore, institution: str, public: Ed25519PublicKey, coordinator: Ed25519PrivateKey
) -> TrustStore:
    check_institution_id(institution)
    kid = keys.key_id(public)
    if kid == store.coordinator.key_id:
        raise TrustError("the coordinator's key cannot also be an institution's key")
    found = store.find(kid)
    if found is not None:
        raise TrustError(f"key {kid} is already in the trust store (institution {found[0]})")
    entry = KeyEntry(key_id=kid, public_key=keys.public_b64(public), added_at=_now())
    institutions = dict(store.institutions)
    institutions[institution] = [*institutions.get(institution, []), entry]
    updated = store.model_copy(
        update={"institutions": institutions, "version": store.version + 1, "updated_at": _now()}
    )
    return sign(updated, coordinator)


def revoke(
    store: TrustStore,
    coordinator: Ed25519PrivateKey,
    *,
    key_id: str | None = None,
    institution: str | None = None,
    reason: str = "",
) -> tuple[TrustStore, list[str]]:
    """Revoke one key, or every active key of an institution; returns the revoked key ids."""
    if (key_id is None) == (institution is None):
        raise TrustError("revoke either one key id or one institution")
    if institution is not None and institution not in store.institutions:
        raise TrustError(f"institution {institution!r} is not in the trust store")
    if key_id is not None and store.find(key_id) is None:
        raise TrustError(f"key {key_id} is not in the trust store")
    now, revoked = _now(), []
    institutions: dict[str, list[KeyEntry]] = {}
    for inst, entries in store.institutions.items():
        new_entries = []
        for e in entries:
            hit = e.key_id == key_id or (inst == institution and key_id is None)
            if hit and not e.revoked:
                e = e.model_copy(update={"revoked_at": now, "revoked_reason": reason or None})
                revoked.append(e.key_id)
            new_entries.append(e)
        institutions[inst] = new_entries
    if not revoked:
        raise TrustError("nothing to revoke: the key(s) are already revoked")
    updated = store.model_copy(
        update={"institutions": institutions, "version": store.version + 1, "updated_at": now}
    )
    return sign(updated, coordinator), revoked


def parse_store(data: bytes, *, source: str, pin: str | None = None) -> TrustStore:
    """Parse and verify a trust store; `pin` is the coordinator key id expected."""
    try:
        store = TrustStore.model_validate_json(data)
    except ValidationError as exc:
        raise TrustError(f"{source}: not a trust store: {exc.errors()[0]['msg']}") from exc
    if store.format != FORMAT:
        raise TrustError(f"{source}: format {store.format!r}, expected {FORMAT!r}")
    if store.signature is None:
        raise TrustError(f"{source}: the trust store is not signed")
    coordinator = store.coordinator_public()
    if keys.key_id(coordinator) != store.coordinator.key_id:
        raise TrustError(f"{source}: coordinator key id does not match its public key")
    if store.signature.key_id != store.coordinator.key_id:
        raise TrustError(f"{source}: signed by {store.signature.key_id}, not the coordinator")
    try:
        signature = base64.b64decode(store.signature.value, validate=True)
    except ValueError as exc:
        raise TrustError(f"{source}: malformed trust store signature") from exc
    if not keys.verify(coordinator, signature, store.body()):
        raise TrustError(
            f"{source}: the coordinator's signature does not verify: the store was edited "
            "after signing"
        )
    if pin is not None and store.coordinator.key_id != pin:
        raise TrustError(
            f"{source}: coordinator key {store.coordinator.key_id} is not the pinned key {pin}"
        )
    for inst, entries in store.institutions.items():
        check_institution_id(inst)
        for e in entries:
            if keys.key_id(keys.public_from_b64(e.public_key)) != e.key_id:
                raise TrustError(f"{source}: key id {e.key_id} of {inst} does not match its key")
    return store


def load_store(path: Path, *, pin: str | None = None) -> TrustStore:
    try:
        data = read_regular(path)
    except FileNotFoundError as exc:
        raise TrustError(f"{path}: trust store not found") from exc
    except UnsafeFile as exc:
        raise TrustError(str(exc)) from exc
    return parse_store(data, source=str(path), pin=pin)


def save_store(path: Path, store: TrustStore) -> None:
    if store.signature is None:
        raise TrustError("refusing to write an unsigned trust store")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Public, but what every verification trusts: durable, atomic, never through a link.
        replace_file(path, store.to_bytes(), mode=0o644)
    except UnsafeFile as exc:
        raise TrustError(str(exc)) from exc
