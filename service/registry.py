"""Who takes part in exposure queries: the institutions' X25519 exposure keys, the registry
of their endpoints and public keys (signed by the coordinator), and the federation key.

Why the registry is signed: an institution computes its masks from the public keys listed in
it, so whoever could swap those keys for their own could remove that institution's masks and
read its figure. Every institution and the service verify it against the trust store; a plain
`registry.json` is accepted for local trials only (the CLI warns).
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jointcredit.service.exposure import ExposureError
from jointcredit.trust.errors import TrustError
from jointcredit.trust.manifest import sign_directory, verify_directory
from jointcredit.trust.store import TrustStore, check_institution_id

REGISTRY_FILE = "registry.json"
REGISTRY_KIND = "jointcredit-exposure-registry"


# -- an institution's exposure key ------------------------------------------------------------


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


# -- the registry ------------------------------------------------------------------------------


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
    for development, a plain registry.json (see `registry_is_signed`)."""
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


# -- the federation key ------------------------------------------------------------------------


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
