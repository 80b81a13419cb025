"""`jointcredit provision`: one directory per party, ready to hand over.

Layout of OUT (no private key ever sits in another party's kit)::

    OUT/provisioner/ca.key          the federation CA's key: stays with whoever provisions
    OUT/coordinator/                the coordinator's kit
        federation.toml             name, SuperLink address, institutions, CA fingerprint
        ca.crt                      the federation CA
        superlink.crt superlink.key the SuperLink's TLS certificate and key (0600)
        coordinator.key             signs the trust store and model artifacts (0600)
        trust.json                  the signed trust store (update-signing public keys)
        nodes/<institution>.pub     node-authentication public keys to register
    OUT/<institution>/              one kit per institution
        federation.toml  ca.crt  trust.json
        node-auth.key node-auth.pub SuperNode authentication key pair (EC, OpenSSH; key 0600)
        signing.key                 its Ed25519 update-signing key (0600)
        node.toml                   its node config (institution id; data path set at start)
        endpoint.crt endpoint.key   vertical scoring's TLS certificate, server and client
                                    (`issue_endpoint_certificate`; key 0600)

Provisioning centrally is NVIDIA FLARE's model and the simplest to operate; an institution
that wants its signing key never to exist elsewhere makes its own (`jointcredit keys new`)
and has the coordinator add the public half (`jointcredit trust add`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from jointcredit.deploy import pki
from jointcredit.trust import keys, store
from jointcredit.trust.keyset import COORDINATOR, TRUST_FILE
from jointcredit.trust.pins import record_pin

FEDERATION_FILE = "federation.toml"
NODE_FILE = "node.toml"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SUPERLINK_CERT = "superlink.crt"
SUPERLINK_KEY = "superlink.key"
NODE_AUTH_KEY = "node-auth.key"
NODE_AUTH_PUB = "node-auth.pub"
SIGNING_KEY = "signing.key"
ENDPOINT_CERT = "endpoint.crt"  # vertical scoring's mutual TLS (service/vertical_kit.py)
ENDPOINT_KEY = "endpoint.key"
COORDINATOR_DIR = "coordinator"
PROVISIONER_DIR = "provisioner"


class Federation(BaseModel):
    """federation.toml: what every party agrees on (nothing secret)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    superlink: str  # HOST:PORT the SuperNodes and the coordinator's tools connect to
    institutions: list[str]
    ca_sha256: str = Field(description="SHA-256 fingerprint of ca.crt")

    @property
    def host(self) -> str:
        return split_address(self.superlink)[0]

    @property
    def port(self) -> int:
        return split_address(self.superlink)[1]


class NodeKit(BaseModel):
    """node.toml: an institution's node config."""

    model_config = ConfigDict(extra="forbid")
    institution: str
    federation: str
    superlink: str


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"superlink address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


@dataclass(frozen=True)
class Provisioned:
    out: Path
    federation: Federation

    @property
    def coordinator(self) -> Path:
        return self.out / COORDINATOR_DIR

    def kit(self, institution: str) -> Path:
        return self.out / institution


def provision(
    federation: str,
    institutions: list[str],
    superlink: str,
    out: Path,
    *,
    extra_hosts: list[str] | None = None,
) -> Provisioned:
    """Create every party's kit under `out` (which must not exist or be empty)."""
    host, _ = split_address(superlink)
    names = [store.check_institution_id(i) for i in institutions]
    if len(set(names)) != len(names) or not names:
        raise ValueError("give one or more distinct institution ids")
    clash = {COORDINATOR_DIR, PROVISIONER_DIR, COORDINATOR} & set(names)
    if clash:
        raise ValueError(f"institution ids {sorted(clash)} are reserved")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: refusing to overwrite an existing federation")
    out.mkdir(parents=True, exist_ok=True)

    ca = pki.create_ca(federation)
    server = pki.server_certificate(ca, federation, [host, *(extra_hosts or [])])
    fed = Federation(
        name=federation,
        superlink=superlink,
        institutions=names,
        ca_sha256=pki.fingerprint(ca.certificate),
    )
    fed_toml = tomli_w.dumps(fed.model_dump()).encode()

    _write(out / PROVISIONER_DIR / CA_KEY, ca.key_pem(), 0o600)
    coord = out / COORDINATOR_DIR
    _write(coord / FEDERATION_FILE, fed_toml)
    _write(coord / CA_CERT, ca.cert_pem())
    _write(coord / SUPERLINK_CERT, server.cert_pem())
    _write(coord / SUPERLINK_KEY, server.key_pem(), 0o600)
    coordinator_key = keys.generate()
    keys.write_private_key(coord / f"{COORDINATOR}.key", coordinator_key)
    trust = store.create(federation, coordinator_key)
    record_pin(federation, trust.coordinator.key_id)

    for inst in names:
        signing = _institution_kit(out, inst, fed, ca.cert_pem())
        trust = store.add_key(trust, inst, signing, coordinator_key)
        _write(out / inst / FEDERATION_FILE, fed_toml)
    # The final trust store (every key added, signed once more) goes to every party.
    store.save_store(coord / TRUST_FILE, trust)
    for inst in names:
        store.save_store(out / inst / TRUST_FILE, trust)
    for directory in (coord, out / PROVISIONER_DIR, *(out / i for i in names)):
        directory.chmod(0o700)
    return Provisioned(out, fed)


def add_institution(out: Path, institution: str, *, passphrase: bytes | None = None) -> Path:
    """Provision one more institution into a federation `provision` made under `out`: its kit
    (new signing and node-authentication keys, the CA, the updated trust store), its node key
    for the coordinator to register, and the coordinator's federation.toml and trust.json
    updated (the next `link run` waits for it too). Kits of the other institutions found under
    `out` get the new trust.json and federation.toml; kits already handed out need them too.
    Returns the new kit's directory."""
    coord = out / COORDINATOR_DIR
    fed = load_federation(coord)
    inst = store.check_institution_id(institution)
    if inst in {COORDINATOR_DIR, PROVISIONER_DIR, COORDINATOR}:
        raise ValueError(f"institution id {inst!r} is reserved")
    if inst in fed.institutions or (out / inst).exists():
        raise ValueError(f"{inst} is already in federation {fed.name!r}")
    coordinator_key = keys.load_private_key(coord / f"{COORDINATOR}.key", passphrase)
    trust = store.load_store(coord / TRUST_FILE, pin=keys.key_id(coordinator_key))
    ca_pem = (coord / CA_CERT).read_bytes()

    signing = _institution_kit(out, inst, fed, ca_pem)
    trust = store.add_key(trust, inst, signing, coordinator_key)
    fed = fed.model_copy(update={"institutions": [*fed.institutions, inst]})
    fed_toml = tomli_w.dumps(fed.model_dump()).encode()
    kit = out / inst
    kit.chmod(0o700)
    for party in (coord, *(out / i for i in fed.institutions)):
        if (party / FEDERATION_FILE).exists() or party == kit:
            _replace(party / FEDERATION_FILE, fed_toml)
            store.save_store(party / TRUST_FILE, trust)
    return kit


def _institution_kit(out: Path, inst: str, fed: Federation, ca_pem: bytes) -> Ed25519PublicKey:
    """An institution's own keys, CA and node config under out/<inst>, and its node key for the
    coordinator to register; returns its update-signing public key for the trust store."""
    kit = out / inst
    key = keys.generate()
    keys.write_private_key(kit / SIGNING_KEY, key)
    auth = pki.node_auth_key(f"{fed.name}:{inst}")
    _write(kit / NODE_AUTH_KEY, auth.private_openssh, 0o600)
    _write(kit / NODE_AUTH_PUB, auth.public_openssh)
    _write(out / COORDINATOR_DIR / "nodes" / f"{inst}.pub", auth.public_openssh)
    _write(kit / CA_CERT, ca_pem)
    node = NodeKit(institution=inst, federation=fed.name, superlink=fed.superlink)
    _write(kit / NODE_FILE, tomli_w.dumps(node.model_dump()).encode())
    return key.public_key()


def issue_endpoint_certificate(out: Path, institution: str, hosts: list[str]) -> Path:
    """Issue `institution`'s endpoint certificate (vertical scoring's mutual TLS: server at
    `hosts`, and client) with the CA key under `out`, into its kit there; an existing one is
    replaced (rotation). Returns the certificate's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    fed = load_federation(out / COORDINATOR_DIR)
    inst = store.check_institution_id(institution)
    kit = out / inst
    if inst not in fed.institutions or not kit.is_dir():
        raise ValueError(f"{inst} has no kit in federation {fed.name!r} under {out}")
    try:
        ca_key = serialization.load_pem_private_key(
            (out / PROVISIONER_DIR / CA_KEY).read_bytes(), None
        )
        ca_cert = x509.load_pem_x509_certificate((kit / CA_CERT).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{out}: cannot read the federation CA: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{out / PROVISIONER_DIR / CA_KEY}: not the federation's CA key")
    if pki.fingerprint(ca_cert) != fed.ca_sha256:
        raise ValueError(f"{kit / CA_CERT} is not the federation's CA")
    issued = pki.endpoint_certificate(pki.Issued(ca_cert, ca_key), fed.name, inst, hosts)
    _replace(kit / ENDPOINT_KEY, issued.key_pem(), 0o600)
    _replace(kit / ENDPOINT_CERT, issued.cert_pem())
    return kit / ENDPOINT_CERT


def _replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def load_federation(kit: Path) -> Federation:
    try:
        return Federation.model_validate(tomllib.loads((kit / FEDERATION_FILE).read_text()))
    except FileNotFoundError as exc:
        raise ValueError(f"{kit}: not a jointcredit kit (no {FEDERATION_FILE})") from exc


def load_node(kit: Path) -> NodeKit:
    try:
        return NodeKit.model_validate(tomllib.loads((kit / NODE_FILE).read_text()))
    except FileNotFoundError as exc:
        raise ValueError(f"{kit}: not an institution's kit (no {NODE_FILE})") from exc
