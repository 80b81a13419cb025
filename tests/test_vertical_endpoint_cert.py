"""Endpoint certificates for vertical scoring's mutual TLS: issued by the federation CA into
the institution's kit (its id as common name, server and client use, the hosts given, key
0600); refused for an institution without a kit; `vertical serve` refuses a kit without one,
and `serve` a vertical model without a kit or with a plain-HTTP party, with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from jointcredit.cli.main import app
from jointcredit.deploy import kits


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    out = tmp_path / "kits"
    kits.provision("endpoint-cert-test", ["bank", "platform"], "127.0.0.1:9092", out)
    return out


def test_the_certificate_names_the_institution_and_serves_both_ends(federation: Path) -> None:
    result = CliRunner().invoke(app, [
        "vertical", "endpoint-cert", "--out", str(federation), "--institution", "platform",
        "--host", "127.0.0.1", "--host", "platform.example",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    kit = federation / "platform"
    cert = x509.load_pem_x509_certificate((kit / "endpoint.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((kit / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "platform"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["platform.example"]
    assert (kit / "endpoint.key").stat().st_mode & 0o777 == 0o600
    assert not (federation / "bank" / "endpoint.crt").exists()


def test_an_institution_without_a_kit_gets_no_certificate(federation: Path) -> None:
    result = CliRunner().invoke(app, [
        "vertical", "endpoint-cert", "--out", str(federation), "--institution", "stranger",
        "--host", "127.0.0.1",
    ])  # fmt: skip
    assert result.exit_code == 2 and "stranger has no kit" in result.output


def test_vertical_serve_refuses_a_kit_without_its_endpoint_certificate(
    federation: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, [
        "vertical", "serve", "--kit", str(federation / "platform"), "--model", str(tmp_path),
        "--data", str(tmp_path / "x.csv"), "--schema", str(tmp_path / "s.toml"),
    ])  # fmt: skip
    assert result.exit_code == 2 and "endpoint-cert" in result.output


def test_serve_of_a_vertical_model_needs_a_kit_and_https_parties(
    federation: Path, tmp_path: Path
) -> None:
    trust = federation / "coordinator" / "trust.json"
    base = ["serve", "--model", str(tmp_path), "--trust", str(trust)]
    no_kit = CliRunner().invoke(app, [*base, "--party", "platform=https://x:1"])
    assert no_kit.exit_code == 2 and "--vertical-kit" in no_kit.output
    plain = CliRunner().invoke(app, [
        *base, "--vertical-kit", str(federation / "bank"), "--party", "platform=http://x:1",
    ])  # fmt: skip
    assert plain.exit_code == 2 and "NAME=https://" in plain.output
