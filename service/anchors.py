"""Signed chain-head anchors: the audit log's witness outside its own database.

The hash chain shows edits inside the log, but someone who can write the database can also
delete the newest rows and rewind `chain_head`, or empty every table, and the chain still
verifies. So the service signs the chain head (seq, hash, time) with a key of its own every
`every` entries or `seconds` seconds, and at shutdown, and appends the signed anchor as one line
to a file that should live where the database's writers cannot write (another volume, a log
shipper, the institutions). `jointcredit audit verify --anchors FILE --anchor-public-key PUB`
then checks every anchor's signature and that the log still holds each anchored row with its
anchored hash: a log truncated or rewritten before the latest anchor fails, naming the row.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict

from jointcredit.service.chain import AuditError, now
from jointcredit.trust import keys
from jointcredit.trust.canonical import canonical_json
from jointcredit.trust.errors import KeyExists

SCHEME = "jointcredit-audit-anchor/1"


class Anchor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scheme: str = SCHEME
    seq: int
    hash: str
    at: str
    key_id: str
    signature: str = ""

    def body(self) -> bytes:
        return canonical_json(self.model_dump(exclude={"signature"}))


def anchor_key(path: Path) -> Ed25519PrivateKey:
    """The service's anchor key at `path`, created (0600, public half beside it as
    `<path>.pub`) if absent. Safe when several service processes start together on a fresh
    directory: one creates it, the others load the one that won."""
    try:
        key = keys.generate()
        keys.write_private_key(path, key)
    except KeyExists:
        key = keys.load_private_key(path)
    public = path.with_name(path.name + ".pub")
    try:
        keys.write_public_key(public, key.public_key())
    except KeyExists:
        if keys.key_id(keys.load_public_key(public)) != keys.key_id(key):
            raise AuditError(
                f"{public} is not the public half of {path}: anchors signed with {path} would "
                "not verify against it"
            ) from None
    return key


@dataclass
class AnchorWriter:
    """Appends a signed anchor of the head `head()` returns when `every` entries or `seconds`
    seconds have passed since the last one (checked after each commit)."""

    path: Path
    key: Ed25519PrivateKey
    head: Callable[[], tuple[int, str]]
    every: int = 1000
    seconds: float = 60.0
    _last_seq: int = -1
    _last_time: float = 0.0

    def after_commit(self, seq: int) -> None:
        due = (
            seq - self._last_seq >= self.every or time.monotonic() - self._last_time >= self.seconds
        )
        if due:
            self.anchor()

    def anchor(self) -> Anchor | None:
        seq, digest = self.head()
        if seq == self._last_seq:
            return None
        unsigned = Anchor(seq=seq, hash=digest, at=now(), key_id=keys.key_id(self.key))
        signed = unsigned.model_copy(
            update={"signature": base64.b64encode(self.key.sign(unsigned.body())).decode()}
        )
        line = (signed.model_dump_json() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, line)  # one write to an O_APPEND file: lines of several workers never mix
            os.fsync(fd)
        finally:
            os.close(fd)
        self._last_seq, self._last_time = seq, time.monotonic()
        return signed


def read_anchors(path: Path, public_key: Ed25519PublicKey) -> list[Anchor]:
    """Every anchor in the file, each signature checked against `public_key`; AuditError names
    the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise AuditError(f"{path}: no anchors file") from exc
    out: list[Anchor] = []
    for n, line in enumerate(lines, start=1):
        try:
            anchor = Anchor.model_validate(json.loads(line))
            signature = base64.b64decode(anchor.signature, validate=True)
        except ValueError as exc:
            raise AuditError(f"{path}:{n}: not an anchor") from exc
        if anchor.scheme != SCHEME or not keys.verify(public_key, signature, anchor.body()):
            raise AuditError(f"{path}:{n}: the anchor's signature does not verify")
        out.append(anchor)
    return out


def check_anchors(anchors: list[Anchor], row_hash: Callable[[int], str | None]) -> None:
    """Every anchored row is still in the log with its anchored hash."""
    for anchor in anchors:
        if anchor.seq == 0:
            continue
        found = row_hash(anchor.seq)
        if found is None:
            raise AuditError(
                f"row {anchor.seq}, anchored at {anchor.at}, is missing: the log was truncated "
                "or emptied after that anchor"
            )
        if found != anchor.hash:
            raise AuditError(
                f"row {anchor.seq} differs from its anchor of {anchor.at}: the log was "
                "rewritten before that anchor"
            )
