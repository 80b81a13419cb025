"""What a party of vertical scoring takes from its kit (`jointcredit provision`, then
`jointcredit vertical endpoint-cert`): who it is, its update-signing key (which signs its
side of the exchange), the federation's trust store (which verifies the other side's) and
the files of its mutual TLS (the federation CA, its endpoint certificate and key).

    KIT/node.toml      institution = "<its id>"
    KIT/signing.key    Ed25519 (0600)
    KIT/trust.json     the coordinator-signed trust store
    KIT/ca.crt         the federation CA: the only issuer either side accepts
    KIT/endpoint.crt   its certificate (server and client use), KIT/endpoint.key (0600)

TLS authenticates the connection as the federation's (any member's certificate); the
Ed25519 signatures say which member, message by message (service/vertical_wire.py).
"""

from __future__ import annotations

import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jointcredit.trust import keys
from jointcredit.trust.errors import TrustError
from jointcredit.trust.store import TrustStore, check_institution_id, load_store

NODE_FILE = "node.toml"  # the names deploy/kits.py writes
SIGNING_KEY = "signing.key"
TRUST_FILE = "trust.json"
CA_CERT = "ca.crt"
ENDPOINT_CERT = "endpoint.crt"
ENDPOINT_KEY = "endpoint.key"


class KitError(ValueError):
    """A kit that cannot serve vertical scoring; the message names the file."""


@dataclass(frozen=True)
class VerticalKit:
    directory: Path
    institution: str
    signing_key: Ed25519PrivateKey
    trust: TrustStore

    @property
    def ca(self) -> Path:
        return self.directory / CA_CERT

    @property
    def certificate(self) -> Path:
        return self.directory / ENDPOINT_CERT

    @property
    def key(self) -> Path:
        return self.directory / ENDPOINT_KEY

    def server_context(self) -> ssl.SSLContext:
        """TLS 1.3 server that requires a client certificate of the federation's CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.certificate, self.key)
        ctx.load_verify_locations(self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """TLS 1.3 client that trusts only the federation's CA, checks the host name and
        shows its own certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.certificate, self.key)
        return ctx


def load_kit(
    directory: Path, *, pin: str | None = None, passphrase: bytes | None = None, tls: bool = True
) -> VerticalKit:
    """Read and check a kit (`tls`: its CA and endpoint certificate must be there too);
    `pin`: the coordinator key id the trust store must be signed by."""
    try:
        node = tomllib.loads((directory / NODE_FILE).read_text(encoding="utf-8"))
        institution = check_institution_id(str(node["institution"]))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TrustError) as exc:
        raise KitError(f"{directory / NODE_FILE}: not an institution's kit: {exc}") from exc
    try:
        trust = load_store(directory / TRUST_FILE, pin=pin)
        key = keys.load_private_key(directory / SIGNING_KEY, passphrase)
    except TrustError as exc:
        raise KitError(str(exc)) from exc
    if keys.key_id(key) not in {e.key_id for e in trust.active_keys(institution)}:
        raise KitError(
            f"{directory / SIGNING_KEY}: not an active key of {institution} in the trust store"
        )
    kit = VerticalKit(directory, institution, key, trust)
    if tls:
        missing = [p.name for p in (kit.ca, kit.certificate, kit.key) if not p.is_file()]
        if missing:
            raise KitError(
                f"{directory}: no {', '.join(missing)} (issue the endpoint certificate with "
                "`jointcredit vertical endpoint-cert`)"
            )
        try:
            kit.server_context()
            kit.client_context()
        except (OSError, ssl.SSLError) as exc:
            raise KitError(f"{directory}: its TLS files do not load: {exc}") from exc
    return kit
