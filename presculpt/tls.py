"""Mutual TLS between agents, operators and the coordinator.

The coordinator accepts only clients whose certificate its CA signed (``require_client_auth``), and
clients accept only a coordinator their CA signed; BoringSSL inside gRPC makes both decisions. An
agent's stream is further bound to its certificate: the ``agent_id`` it announces must be one of the
certificate's names (see :func:`peer_names`). Plain text exists only when asked for explicitly
(``--insecure`` or ``[tls] insecure = true``), and is then announced loudly.

``presculpt certs`` (:mod:`presculpt.certs`) makes a CA and certificates for a lab or a small site.
gRPC and cryptography are imported where used: the agent's one-shot commands need neither.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from presculpt.errors import UserError

if TYPE_CHECKING:
    import argparse

    import grpc

DEFAULT_PKI_DIR = "/etc/presculpt/pki"
HOW_TO_FIX = ("make a CA and certificates with `presculpt certs init` and `presculpt certs issue HOST`, "
              "or give --insecure for plain text")


class TlsError(UserError):
    """TLS material is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class TlsConfig:
    """``[tls]`` of both daemons: PEM files, or plain text only when ``insecure`` says so."""

    ca: str = ""  # the CA certificate peers must be signed by
    cert: str = ""  # this daemon's certificate (signed by a CA the peer trusts)
    key: str = ""  # its private key
    insecure: bool = False  # plain text: nothing encrypted, nobody authenticated (tests, throwaway labs)

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("tls.cert and tls.key go together: give both")
        if self.insecure and (self.ca or self.cert or self.key):
            raise ValueError("tls.insecure turns TLS off, yet TLS files are given: keep one or the other")

    def with_overrides(self, ca: str | None = None, cert: str | None = None, key: str | None = None,
                       insecure: bool = False) -> "TlsConfig":
        """The configuration with command-line flags applied (a flag replaces its key)."""
        changes: dict[str, Any] = {k: v for k, v in (("ca", ca), ("cert", cert), ("key", key)) if v}
        if insecure:
            changes["insecure"] = True
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as err:
            message = str(err).replace("tls.insecure", "--insecure") if insecure else str(err)
            raise TlsError(message) from None


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM contents of a :class:`TlsConfig`, read and checked once at start."""

    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    cert_path: str = ""


def load_material(config: TlsConfig, who: str, need_cert: bool = True) -> TlsMaterial | None:
    """Read and check the files of ``config``; None when ``insecure``. ``who`` names the daemon in
    the error ("the coordinator"); ``need_cert``: a client may go without a certificate of its own. Raises :class:`TlsError` with one line saying what to do."""
    if config.insecure:
        return None
    if not config.ca or (need_cert and not config.cert):
        missing = "--ca, --cert and --key" if need_cert else "--ca"
        raise TlsError(f"{who} needs TLS material: give {missing} (or [tls] in its config); {HOW_TO_FIX}")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_pem = _read(config.ca, "tls.ca")
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise TlsError(f"tls.ca {config.ca} holds no PEM certificate") from None
    if not config.cert:
        return TlsMaterial(ca_pem)
    cert_pem, key_pem = _read(config.cert, "tls.cert"), _read(config.key, "tls.key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsError(f"tls.cert {config.cert} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"tls.key {config.key} holds no unencrypted PEM private key") from None
    if key.public_key() != cert.public_key():
        raise TlsError(f"tls.key {config.key} is not the key of tls.cert {config.cert}")
    return TlsMaterial(ca_pem, cert_pem, key_pem, config.cert)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TlsError(f"cannot read {what} {path}: {err.strerror}") from None


def server_credentials(material: TlsMaterial) -> "grpc.ServerCredentials":
    """The coordinator's port: its certificate, and only clients its CA signed."""
    import grpc

    assert material.cert_pem is not None and material.key_pem is not None
    return grpc.ssl_server_credentials([(material.key_pem, material.cert_pem)],
                                       root_certificates=material.ca_pem, require_client_auth=True)


def channel(target: str, material: TlsMaterial | None, options: list | None = None) -> "grpc.Channel":
    """A channel to the coordinator: TLS with this client's certificate, or plain text for None."""
    import grpc

    if material is None:
        return grpc.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(material.ca_pem, material.key_pem, material.cert_pem)
    return grpc.secure_channel(target, creds, options=options)


def peer_names(auth_context: dict[str, list[bytes]]) -> tuple[str, ...] | None:
    """The names a verified client certificate vouches for (its common name and subject alternative
    names); None when the connection is not TLS (the coordinator runs with --insecure)."""
    if auth_context.get("transport_security_type") != [b"ssl"]:
        return None
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            name = value.decode(errors="replace")
            if name not in names:
                names.append(name)
    return tuple(names)


# How a client's failed connection reads when the server ended the TLS handshake, as opposed to
# "Connection refused" (nothing listening) or a failed name resolution.
_HANDSHAKE_ENDINGS = ("socket closed", "handshake", "connection reset", "end of tcp stream")


def handshake_ended(details: str) -> bool:
    """Whether gRPC's details of an UNAVAILABLE connection say the server ended the handshake."""
    lowered = details.lower()
    return any(ending in lowered for ending in _HANDSHAKE_ENDINGS)


def certificate_problem(material: TlsMaterial, now: datetime.datetime | None = None) -> str | None:
    """Why a coordinator would refuse this client's certificate, as far as the client can tell: none
    given, expired, not yet valid or not signed by the CA this client trusts. With TLS 1.3 a client
    learns only that the server closed the connection, so this is how its log says why."""
    from cryptography import x509

    if material.cert_pem is None:
        return "it presents no client certificate (give --cert and --key)"
    cert = x509.load_pem_x509_certificate(material.cert_pem)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    path = material.cert_path or "its certificate"
    if cert.not_valid_after_utc < now:
        return (f"its certificate {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                "(issue a new one: presculpt certs issue HOST --force)")
    if cert.not_valid_before_utc > now:
        return f"its certificate {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    cas = x509.load_pem_x509_certificates(material.ca_pem)
    if not any(_signed_by(cert, ca) for ca in cas):
        return (f"its certificate {path} was issued by '{_display(cert.issuer)}', not by the CA it "
                f"trusts ('{_display(cas[0].subject)}'); the coordinator likely trusts only that CA")
    return None


def _display(name: Any) -> str:
    """A certificate name as people say it: its common name, else the whole distinguished name."""
    from cryptography.x509.oid import NameOID

    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else name.rfc4514_string()


def _signed_by(cert: Any, ca: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # another issuer, key type or signature
        return False
    return True


def warn_insecure(log: logging.Logger, what: str) -> None:
    """The loud line of plain-text mode."""
    log.warning("INSECURE: %s runs in plain text (--insecure): nothing is encrypted and nobody is "
                "authenticated, so anyone who reaches it can read metrics and send commands; %s", what,
                "use TLS outside a throwaway lab (presculpt certs init, presculpt certs issue HOST)")


def tls_flags(parser: "argparse.ArgumentParser", peer: str) -> None:
    """``--ca``, ``--cert``, ``--key`` and ``--insecure`` (each overrides its ``[tls]`` key)."""
    parser.add_argument("--ca", metavar="FILE", help=f"CA certificate {peer} must be signed by (default: tls.ca)")
    parser.add_argument("--cert", metavar="FILE", help="this daemon's certificate (default: tls.cert)")
    parser.add_argument("--key", metavar="FILE", help="its private key (default: tls.key)")
    parser.add_argument("--insecure", action="store_true",
                        help="plain text, no TLS: nothing encrypted, nobody authenticated (tests, throwaway labs)")
