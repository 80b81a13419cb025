"""The federation's certificates and node-authentication keys (`cryptography`).

- a federation CA (EC P-384, self-signed, path length 0): it signs the SuperLink's TLS
  certificate and nothing else; SuperNodes trust exactly this CA for the SuperLink;
- the SuperLink's TLS certificate (EC P-256) with a SAN for each name or address it is
  reached by;
- an institution's endpoint certificate (EC P-256, its id as common name; server and client
  use) for the mutual TLS of vertical scoring (`jointcredit vertical endpoint-cert`);
- one node-authentication key pair per institution: EC P-256 in OpenSSH format, the format
  `flwr supernode register` and `flower-supernode --auth-supernode-private-key` expect.

Flower does not provision these (it documents doing it with openssl); they are a handful of
`cryptography` calls, written here so that provisioning runs anywhere Python does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825  # the CA/Browser Forum's old maximum: long enough, rotated in docs


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common_name: str, federation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"jointcredit federation {federation}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def create_ca(federation: str) -> Issued:
    key = ec.generate_private_key(ec.SECP384R1())
    start, end = _validity(CA_DAYS)
    name = _name(f"{federation} federation CA", federation)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA384())
    )
    return Issued(cert, key)


def _san(host: str) -> list[x509.GeneralName]:
    try:
        return [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        return [x509.DNSName(host)]


def _leaf(
    ca: Issued, subject: x509.Name, hosts: list[str], usage: list[x509.ObjectIdentifier]
) -> Issued:
    """A fresh EC P-256 key and its certificate from `ca`: valid for every name in `hosts`
    (duplicates once), not a CA, for the extended key `usage` given."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(LEAF_DAYS)
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        sans.extend(_san(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .sign(ca.key, hashes.SHA384())
    )
    return Issued(cert, key)


def server_certificate(ca: Issued, federation: str, hosts: list[str]) -> Issued:
    """The SuperLink's TLS certificate, valid for every name in `hosts`."""
    if not hosts:
        raise ValueError("the SuperLink certificate needs at least one host name or address")
    subject = _name(f"{federation} superlink", federation)
    return _leaf(ca, subject, hosts, [ExtendedKeyUsageOID.SERVER_AUTH])


def endpoint_certificate(ca: Issued, federation: str, institution: str, hosts: list[str]) -> Issued:
    """An institution's certificate for the vertical scoring exchange's mutual TLS: its id as
    the common name, valid as a server (a feature party's endpoint, reached at `hosts`) and
    as a client (the bank's service asking)."""
    if not hosts:
        raise ValueError("an endpoint certificate needs at least one host name or address")
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _leaf(ca, _name(institution, federation), hosts, usage)


@dataclass(frozen=True)
class NodeAuthKey:
    """A SuperNode's authentication key pair (EC P-256, OpenSSH encodings)."""

    private_openssh: bytes
    public_openssh: bytes


def node_auth_key(comment: str) -> NodeAuthKey:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return NodeAuthKey(private, public + b" " + comment.encode() + b"\n")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()
