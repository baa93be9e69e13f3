"""Throwaway certificates for the TLS tests and `loadtests.bench_tls`: a CA, and server and
client certificates it signs (EC P-256, valid a day), written as PEM files. Needs the
`cryptography` package (test and bench extras); never for production keys."""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "Issued"]


@dataclass(frozen=True)
class Issued:
    """PEM files of one certificate and its key."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    path.parent.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = path.with_suffix(".pem"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)  # the owner's only, before the key is in it: a key others may
    key_path.chmod(0o600)  # read made every server start warn, 4 lines a start (--tls-key)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Issued(cert_path, key_path)


class CertificateAuthority:
    """A self-signed CA; `ca.pem` is what clients (or a server, for client certificates) trust."""

    def __init__(self, directory: Path, name: str = "tailor-test-ca"):
        self.directory = Path(directory)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = _name(name)
        now = dt.datetime.now(dt.UTC)
        self._cert = (self._builder(self._subject, self._key.public_key(), now)
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.cert = _write(self.directory / name, self._cert, self._key).cert

    def _builder(self, subject: x509.Name, public_key, now: dt.datetime) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self._subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1)))

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
              client: bool = False, shift: dt.timedelta = dt.timedelta(0)) -> Issued:
        """A server certificate for `hosts`, or a client certificate (`client=True`), signed by
        this CA, written as `<directory>/<name>.pem` and `.key`; `shift` moves its validity
        window (from 5 minutes ago to a day on) from now (`-2 days`: expired)."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (self._builder(_name(name), key.public_key(), dt.datetime.now(dt.UTC) + shift)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if not client:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]),
                                            critical=False)
        return _write(self.directory / name, builder.sign(self._key, hashes.SHA256()), key)
