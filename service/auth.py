"""API keys: each calling institution sends `Authorization: Bearer <key>`.

The keys file stores only a SHA-256 of each key (a key is 256 random bits, so a fast hash is
enough: there is nothing to brute-force). `jointcredit apikey new` prints a key once.
Key format: `jck_<key id>_<secret>`; the key id selects the entry, the hash comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from jointcredit.trust.files import locked, refuse_symlink, replace_file
from jointcredit.trust.store import check_institution_id

FORMAT = "jointcredit-api-keys/1"
PREFIX = "jck"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key_id: str
    institution: str
    sha256: str
    created_at: str
    revoked: bool = False


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: str = FORMAT
    keys: list[ApiKey] = []


class AuthError(ValueError):
    pass


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_keys(path: Path) -> KeyFile:
    try:
        data = KeyFile.model_validate_json(path.read_bytes())
    except FileNotFoundError as exc:
        raise AuthError(f"{path}: API keys file not found") from exc
    except ValidationError as exc:
        raise AuthError(f"{path}: not an API keys file: {exc.errors()[0]['msg']}") from exc
    if data.format != FORMAT:
        raise AuthError(f"{path}: format {data.format!r}, expected {FORMAT!r}")
    return data


def new_key(path: Path, institution: str) -> str:
    """Add a key for `institution` to the file (created 0600 if absent); returns the key.
    Concurrent calls (several processes) each add theirs: the file is locked from read to
    replace, and written atomically, never through a symlink."""
    check_institution_id(institution)
    with locked(path):
        refuse_symlink(path)
        current = load_keys(path) if path.exists() else KeyFile()
        key_id = secrets.token_hex(6)
        token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        entry = ApiKey(
            key_id=key_id,
            institution=institution,
            sha256=_digest(token),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        updated = KeyFile(keys=[*current.keys, entry])
        replace_file(path, (json.dumps(updated.model_dump(), indent=1) + "\n").encode())
    return token


class Authenticator:
    def __init__(self, keys: KeyFile) -> None:
        self._by_id = {k.key_id: k for k in keys.keys if not k.revoked}

    def institution(self, authorization: str | None) -> str:
        """The institution a bearer key belongs to; AuthError (one vague message) otherwise."""
        return self.key(authorization).institution

    def key(self, authorization: str | None) -> ApiKey:
        """The API key of a bearer token; AuthError (one vague message) otherwise."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("missing bearer key")
        token = authorization[len("Bearer ") :].strip()
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            raise AuthError("invalid key")
        entry = self._by_id.get(parts[1])
        if entry is None or not hmac.compare_digest(entry.sha256, _digest(token)):
            raise AuthError("invalid key")
        return entry
