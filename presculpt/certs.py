"""``presculpt certs``: a CA and per-host certificates for a lab or a small site.

    presculpt certs init [--dir DIR] [--days N] [--force]              ca.crt and ca.key
    presculpt certs issue HOST [--ip IP]... [--dns NAME]... [--client]  HOST.crt and HOST.key

A host certificate (the default) serves both roles: the coordinator presents it to its clients, an
agent presents it to the coordinator, which checks that the agent's announced ``agent_id`` is one of
its names (HOST or a ``--dns`` name). ``--client`` issues a client-only certificate, for an operator's
``presculpt hosts``, ``presculpt resize``... Keys are ECDSA P-256, written 0600; nothing is
overwritten without ``--force``. Sites with their own PKI point ``[tls]`` at it instead.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from presculpt.clitools import positive_int
from presculpt.errors import UserError
from presculpt.tls import DEFAULT_PKI_DIR

ENV_PKI = "PRESCULPT_PKI"
CA_NAME = "ca"
CA_DAYS = 3650
HOST_DAYS = 825
# A host name, an operator's name: letters, digits, dots, dashes and underscores (also a file name).
_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9_])?$")


class CertsError(UserError):
    """A certificate cannot be made as asked (bad name, missing CA, file in the way)."""


@dataclass(frozen=True)
class Issued:
    """What ``issue`` wrote: the certificate and key paths, the names and the expiry."""

    cert_path: Path
    key_path: Path
    names: tuple[str, ...]
    not_valid_after: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def build_ca(key: ec.EllipticCurvePrivateKey, common_name: str, not_before: datetime.datetime,
             not_after: datetime.datetime) -> x509.Certificate:
    """A self-signed CA certificate that may sign end-entity certificates only."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Presculpt")])
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def build_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                      key: ec.EllipticCurvePrivateKey, common_name: str, dns: Sequence[str] = (),
                      ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (), client_only: bool = False,
                      not_before: datetime.datetime | None = None,
                      not_after: datetime.datetime | None = None) -> x509.Certificate:
    """An end-entity certificate for ``common_name`` signed by the CA: server and client use, or
    client use only. The validity defaults to 825 days from five minutes ago (clock skew)."""
    not_before = not_before or _now() - datetime.timedelta(minutes=5)
    not_after = not_after or not_before + datetime.timedelta(days=HOST_DAYS)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_only else [ExtendedKeyUsageOID.SERVER_AUTH,
                                                                   ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    alt_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt_names += [x509.IPAddress(ip) for ip in ips]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write ``data`` with permissions ``mode`` from the first byte (a key is never world-readable)."""
    if force and path.exists():
        path.unlink()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertsError(f"{path} exists (give --force to replace it)") from None
    except OSError as err:
        raise CertsError(f"cannot write {path}: {err.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _refuse_existing(paths: Sequence[Path], force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise CertsError(f"{path} exists (give --force to replace it)")


def _directory(path: str | Path) -> Path:
    directory = Path(path)
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as err:
        raise CertsError(f"cannot create {directory}: {err.strerror}") from None
    return directory


def init_ca(directory: str | Path, common_name: str = "Presculpt CA", days: int = CA_DAYS,
            force: bool = False) -> tuple[Path, Path]:
    """Make ``ca.crt`` and ``ca.key`` (0600) in ``directory``; returns their paths."""
    directory = _directory(directory)
    cert_path, key_path = directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key"
    _refuse_existing((cert_path, key_path), force)
    key = new_key()
    now = _now()
    cert = build_ca(key, common_name, now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days))
    _write(key_path, key_pem(key), 0o600, force)
    _write(cert_path, cert_pem(cert), 0o644, force)
    return cert_path, key_path


def load_ca(directory: str | Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    directory = Path(directory)
    cert_path, key_path = directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key"
    if not cert_path.exists() or not key_path.exists():
        raise CertsError(f"no CA in {directory} (run `presculpt certs init --dir {directory}` first)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as err:
        raise CertsError(f"cannot read the CA in {directory}: {err.strerror}") from None
    except ValueError:
        raise CertsError(f"{cert_path} or {key_path} is not a PEM certificate and unencrypted key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertsError(f"{key_path} is not the key of {cert_path}")
    return key, cert


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise CertsError(f"{name!r} is not a host name (letters, digits, '.', '-' and '_' only)")
    return name


def issue(directory: str | Path, name: str, dns: Sequence[str] = (), ips: Sequence[str] = (),
          client_only: bool = False, days: int = HOST_DAYS, force: bool = False) -> Issued:
    """Make ``NAME.crt`` and ``NAME.key`` (0600) signed by the CA in ``directory``. A host certificate
    names HOST, every ``dns`` name and every IP address; a client-only one its name only."""
    check_name(name)
    for d in dns:
        check_name(d)
    addresses = []
    for ip in ips:
        try:
            addresses.append(ipaddress.ip_address(ip))
        except ValueError:
            raise CertsError(f"{ip!r} is not an IP address") from None
    directory = Path(directory)
    ca_key, ca_cert = load_ca(directory)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    if cert_path == directory / f"{CA_NAME}.crt":
        raise CertsError(f"'{CA_NAME}' is the CA's own name; pick another")
    _refuse_existing((cert_path, key_path), force)
    dns_names = [] if client_only and not dns else list(dict.fromkeys([name, *dns]))
    try:  # a HOST given as an address is an IP name, not a DNS one
        addresses.insert(0, ipaddress.ip_address(name))
        dns_names.remove(name)
    except ValueError:
        pass
    key = new_key()
    not_before = _now() - datetime.timedelta(minutes=5)
    not_after = not_before + datetime.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        not_after = ca_cert.not_valid_after_utc  # a certificate never outlives its CA
    cert = build_certificate(ca_key, ca_cert, key, name, dns_names, addresses, client_only, not_before, not_after)
    _write(key_path, key_pem(key), 0o600, force)
    _write(cert_path, cert_pem(cert), 0o644, force)
    names = (*dns_names, *(str(a) for a in addresses))
    return Issued(cert_path, key_path, names or (name,), not_after)


def _pki_dir(args: argparse.Namespace) -> str:
    return args.dir or os.environ.get(ENV_PKI) or DEFAULT_PKI_DIR


def cmd_init(args: argparse.Namespace) -> int:
    directory = _pki_dir(args)
    cert_path, key_path = init_ca(directory, args.name, args.days, args.force)
    print(f"CA written: {cert_path} and {key_path} (keep the key private; it signs every certificate)")
    print(f"next: presculpt certs issue HOST --dir {directory} [--ip ADDR] [--dns NAME] for the coordinator "
          "and each agent host, and presculpt certs issue operator --client for the operators")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    issued = issue(_pki_dir(args), args.host, args.dns or (), args.ip or (), args.client, args.days, args.force)
    kind = "client certificate" if args.client else "certificate"
    print(f"{kind} for {', '.join(issued.names)} written: {issued.cert_path} and {issued.key_path} "
          f"(valid until {issued.not_valid_after:%Y-%m-%d})")
    return 0


def add_certs_commands(sub: argparse._SubParsersAction) -> None:
    from presculpt.clitools import ArgumentParser

    p = sub.add_parser("certs", help="a CA and certificates for mutual TLS (lab or small site)")
    certs = p.add_subparsers(dest="certs", metavar="ACTION", required=True, parser_class=ArgumentParser)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help=f"where the files go (default: ${ENV_PKI}, else {DEFAULT_PKI_DIR})")
    common.add_argument("--force", action="store_true", help="replace files that exist")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")

    s = certs.add_parser("init", parents=[common], help="make a CA: ca.crt and ca.key")
    s.add_argument("--name", default="Presculpt CA", help="the CA's common name (default: Presculpt CA)")
    s.add_argument("--days", type=positive_int, default=CA_DAYS, help=f"validity in days (default {CA_DAYS})")
    s.set_defaults(func=cmd_init)

    s = certs.add_parser("issue", parents=[common], help="a key and certificate for HOST, signed by the CA",
                         description="Writes HOST.crt and HOST.key. An agent's agent_id (default: its hostname) "
                                     "must be HOST or one of the --dns names.")
    s.add_argument("host", help="the host's name (an agent's agent_id), or an operator's name with --client")
    s.add_argument("--ip", action="append", metavar="ADDR", help="an IP address the host is reached at (repeatable)")
    s.add_argument("--dns", action="append", metavar="NAME", help="another DNS name of the host (repeatable)")
    s.add_argument("--client", action="store_true", help="a client-only certificate (an operator's)")
    s.add_argument("--days", type=positive_int, default=HOST_DAYS, help=f"validity in days (default {HOST_DAYS})")
    s.set_defaults(func=cmd_issue)
