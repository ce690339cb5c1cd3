"""presculpt certs init|issue: a CA and certificates that gRPC's TLS accepts; keys 0600; no overwrite
without --force; mistakes are one line."""

from __future__ import annotations

import datetime
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from presculpt import tls
from presculpt.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # a usage error, from argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_and_issue_write_a_ca_and_host_certificates(tmp_path, capsys):
    pki = tmp_path / "pki"
    code, out, err = run(capsys, "certs", "init", "--dir", str(pki), "--days", "30")
    assert (code, err) == (0, "") and f"{pki}/ca.crt" in out and "presculpt certs issue HOST" in out
    code, out, err = run(capsys, "certs", "issue", "kvm1", "--dir", str(pki), "--ip", "10.0.0.5",
                         "--dns", "kvm1.example.com", "--days", "10")
    assert (code, err) == (0, "") and "kvm1, kvm1.example.com, 10.0.0.5" in out
    code, _, err = run(capsys, "certs", "issue", "alice", "--client", "--dir", str(pki))
    assert (code, err) == (0, "")

    for name in ("ca", "kvm1", "alice"):
        assert stat.S_IMODE((pki / f"{name}.key").stat().st_mode) == 0o600
    ca, host, client = load(pki / "ca.crt"), load(pki / "kvm1.crt"), load(pki / "alice.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    host.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    alt = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["kvm1", "kvm1.example.com"]
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    usages = host.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    lifetime = host.not_valid_after_utc - host.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=10)
    # What the daemons load: the files are consistent, and a fresh certificate has nothing wrong.
    material = tls.load_material(tls.TlsConfig(ca=str(pki / "ca.crt"), cert=str(pki / "kvm1.crt"),
                                               key=str(pki / "kvm1.key")), "test")
    assert material is not None and tls.certificate_problem(material) is None


def test_a_certificate_never_outlives_its_ca(tmp_path, capsys):
    assert run(capsys, "certs", "init", "--dir", str(tmp_path), "--days", "5")[0] == 0
    assert run(capsys, "certs", "issue", "h", "--dir", str(tmp_path), "--days", "500")[0] == 0
    assert load(tmp_path / "h.crt").not_valid_after_utc == load(tmp_path / "ca.crt").not_valid_after_utc


def test_nothing_is_overwritten_without_force(tmp_path, capsys):
    assert run(capsys, "certs", "init", "--dir", str(tmp_path))[0] == 0
    ca_before = (tmp_path / "ca.crt").read_bytes()
    code, out, err = run(capsys, "certs", "init", "--dir", str(tmp_path))
    assert (code, out) == (1, "") and err == f"presculpt: error: {tmp_path}/ca.crt exists (give --force to replace it)\n"
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert run(capsys, "certs", "issue", "h", "--dir", str(tmp_path))[0] == 0
    key_before = (tmp_path / "h.key").read_bytes()
    code, _, err = run(capsys, "certs", "issue", "h", "--dir", str(tmp_path))
    assert code == 1 and "h.crt exists (give --force to replace it)" in err and err.count("\n") == 1
    assert (tmp_path / "h.key").read_bytes() == key_before
    assert run(capsys, "certs", "issue", "h", "--dir", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "h.key").read_bytes() != key_before
    assert stat.S_IMODE((tmp_path / "h.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("argv, message", [
    (["issue", "bad/name"], "'bad/name' is not a host name"),
    (["issue", "h", "--ip", "10.0.0.300"], "'10.0.0.300' is not an IP address"),
    (["issue", "h", "--dns", "a b"], "'a b' is not a host name"),
    (["issue", "ca"], "'ca' is the CA's own name"),
    (["issue", "h", "--days", "0"], "expected a number above zero"),
])
def test_mistakes_are_one_line(tmp_path, capsys, argv, message):
    assert run(capsys, "certs", "init", "--dir", str(tmp_path))[0] == 0
    code, out, err = run(capsys, "certs", *argv, "--dir", str(tmp_path))
    assert code in (1, 2) and out == "" and err.count("\n") == 1 and message in err


def test_issue_needs_a_ca(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRESCULPT_PKI", str(tmp_path / "empty"))
    code, out, err = run(capsys, "certs", "issue", "h")
    assert (code, out) == (1, "")
    assert err == f"presculpt: error: no CA in {tmp_path}/empty (run `presculpt certs init --dir {tmp_path}/empty` first)\n"
