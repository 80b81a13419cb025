"""Ed25519 signing keys on disk, and the key id everything else refers to them by.

Private keys are PKCS#8 PEM, written 0600 and optionally encrypted with `cryptography`'s best
available encryption; a private key file readable by group or others is refused on load, as
ssh does. Public keys are SubjectPublicKeyInfo PEM. The key id is the first 16 bytes of the
SHA-256 of the raw 32-byte public key, in hex: short enough to print, long enough not to collide.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from jointcredit.trust.errors import KeyExists, TrustError

SIGNATURE_BYTES = 64


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(raw_public(pub)).hexdigest()[:32]


def public_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public(key)).decode()


def public_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise TrustError(f"not an Ed25519 public key: {exc}") from exc


def verify(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never briefly world-readable), whole: written
    to a temporary file beside it and hard-linked into place, so a concurrent reader sees no
    file or the complete key, never a half-written one. Refuse to overwrite an existing key
    (`KeyExists`: two creators racing, exactly one wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp made it 0600; the umask plays no part
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise KeyExists(f"{path}: already exists; refusing to overwrite a key") from exc
    finally:
        os.unlink(tmp)


def write_private_key(path: Path, key: Ed25519PrivateKey, passphrase: bytes | None = None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_new(path, pem, 0o600)


def write_public_key(path: Path, key: Ed25519PublicKey) -> None:
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(path, pem, 0o644)


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise TrustError(f"{path}: private key not found") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TrustError(
            f"{path}: permissions {stat.S_IMODE(mode):04o} are too open for a private key "
            f"(chmod 600 {path})"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:  # encrypted without a passphrase, or the reverse
        raise TrustError(f"{path}: {exc}") from exc
    except ValueError as exc:
        raise TrustError(f"{path}: cannot load the private key (wrong passphrase?): {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise TrustError(f"{path}: public key not found") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        return public_from_b64(data.decode(errors="replace").strip())
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def passphrase_from_env(variable: str | None) -> bytes | None:
    """Passphrases come from an environment variable, never a command-line argument (which
    other users can read in the process list)."""
    if not variable:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise TrustError(f"environment variable {variable} (the key passphrase) is not set")
    return value.encode()
