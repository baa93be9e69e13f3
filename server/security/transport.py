"""TLS on the gRPC port, certificates re-read on SIGHUP, and the secure-by-default rule.

`ServerTls` hands gRPC dynamic server credentials: every new handshake asks its fetcher for a
configuration, which changes only after `reload()` (the SIGHUP handler) re-read and checked the
files, at once, logging the outcome then (it was done at the next new connection: a worker no
client reached said nothing, so an operator's SIGHUP got no answer from the gRPC port).
A reload that cannot read a matching certificate and key, or whose certificate is outside
its validity window (expired, or not yet valid: every client would refuse it), keeps the old
ones and logs why, so a half-copied or stale rotation never takes the port down. The HTTPS
endpoints (metrics, the public port) run the same checks (`check`) before they switch.

Each file is checked on its own (`TlsFileInvalid` names its flag and path) with the bytes that
gRPC is then given. A passphrase-protected key is refused, never prompted for: OpenSSL asks on
the terminal when no passphrase callback is set, and a gRPC handshake thread (or the event
loop, for the HTTPS endpoints) would wait there for good.
"""
from __future__ import annotations

import datetime as dt
import logging
import ssl
import stat
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import ServeRefused, TlsFileInvalid
from .hosts import is_loopback, with_port
from .principals import writable_by_all

__all__ = ["CLOCK_SKEW", "ServerTls", "check_exposure", "metrics_context", "no_passphrase"]

logger = logging.getLogger("tailor.security.transport")

CLOCK_SKEW = dt.timedelta(minutes=5)
"""How far ahead of this host's clock a certificate's validity may start and still be taken
(with a warning): one made the second it is installed (`openssl x509 -req` starts it then) on a
host whose clock runs a little ahead was refused at start and on SIGHUP, where the rotation's
one signal never took it and the current certificate then ran out. Kerberos's usual skew."""


def check_exposure(settings) -> str | None:
    """The secure-by-default rule, checked before anything binds. Raises ServeRefused with one
    line naming the flags when a non-loopback bind lacks TLS or an auth config (a metrics one:
    TLS), plain SMTP goes to a relay off this host, or an exposed public port's links are not
    https, and `--insecure` was not given; else returns a warning to log naming each of those
    `--insecure` let through, and a metrics port exposed without a client CA
    (`_check_metrics`), None when nothing was."""
    if (settings.tls_key is None) != (settings.tls_cert is None):
        raise ServeRefused("--tls-cert and --tls-key go together")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ServeRefused("--tls-client-ca needs --tls-cert and --tls-key")
    tls, auth = settings.tls_cert is not None, settings.auth_config is not None
    serving = None
    if not (tls and auth):
        missing = " and ".join(what for what, on in (("TLS", tls), ("authentication", auth))
                               if not on)
        if not is_loopback(settings.host) and not settings.insecure:
            raise ServeRefused(f"refusing to serve on {settings.host} without {missing}: give "
                               "--tls-cert FILE --tls-key FILE [--tls-client-ca FILE] and "
                               "--auth-config FILE, or --insecure to serve anyway")
        serving = f"serving without {missing}" + ("" if auth else ": every caller is "
                                                               "unauthenticated")
    relaxed = [why for why in (serving, _check_public_url(settings), _check_smtp(settings),
                               _check_metrics(settings)) if why]
    return "; ".join(relaxed) or None


def _check_metrics(settings) -> str | None:
    """What a metrics port on a non-loopback `metrics_host` lets through without a client CA
    (its only credential): warned, not refused, since a scraper elsewhere is why it is set;
    without TLS at all it is a non-loopback bind in plain text, refused unless `--insecure`
    (as `host` is)."""
    if getattr(settings, "metrics_port", None) is None or is_loopback(settings.metrics_host) \
            or settings.tls_client_ca is not None:
        return None
    where = with_port(settings.metrics_host, settings.metrics_port)
    if settings.tls_cert is None:
        if not settings.insecure:
            raise ServeRefused(f"refusing to serve metrics on {where} without TLS: give "
                               "--tls-cert FILE --tls-key FILE [--tls-client-ca FILE], a "
                               "loopback --metrics-host, or --insecure to serve anyway")
        return (f"--insecure: metrics on {where} in plain HTTP: anyone who reaches the port "
                "reads them (campaign ids, model versions, counts)")
    return (f"metrics on {where} without --tls-client-ca: anyone who reaches the port reads "
            "them (campaign ids, model versions, counts)")


def _check_smtp(settings) -> str | None:
    """Plain SMTP (`smtp_security` none) only to a relay on loopback, as the setting says:
    to another host every email (addresses, names, unsubscribe links) and the relay's login
    would cross the network unencrypted. `--insecure` allows it: then what it lets through."""
    host = getattr(settings, "smtp_host", "")
    if not host or getattr(settings, "smtp_security", "") != "none" or is_loopback(host):
        return None
    if not settings.insecure:
        raise ServeRefused(f"TAILOR_SMTP_SECURITY=none sends email and the relay login "
                           f"unencrypted to {host}: use starttls or tls, a relay on loopback, "
                           "or give --insecure")
    return (f"--insecure: TAILOR_SMTP_SECURITY=none sends email and the relay login "
            f"unencrypted to {host}")


def _check_public_url(settings) -> str | None:
    """An exposed public HTTP port needs the https base URL its links are built on;
    `--insecure` allows an http one: then what it lets through."""
    if getattr(settings, "public_http_port", None) is None or is_loopback(settings.host):
        return None
    url = settings.public_url
    if not url:
        raise ServeRefused("--public-http-port on a non-loopback host needs --public-url (the "
                         "externally visible https:// base of unsubscribe links)")
    if url.startswith("https://"):
        return None
    if not settings.insecure:
        raise ServeRefused("--public-url must be https:// (unsubscribe links carry a credential), "
                         "or give --insecure")
    return (f"--insecure: unsubscribe links are built on {url}, not https://: the credential "
            "each carries crosses the network readable")


class ServerTls:
    """Server credentials from PEM files; `reload()` makes the next handshake re-read them."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None):
        self.cert, self.key, self.client_ca = Path(cert), Path(key), client_ca and Path(client_ca)
        self._initial = self._read()
        self._next: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # `reload` on the event loop, `_fetch` on gRPC's threads

    @classmethod
    def from_settings(cls, settings) -> ServerTls | None:
        """None without `tls_cert`; ServeRefused with one line if the files do not load."""
        if settings.tls_cert is None:
            return None
        try:
            return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        except TlsFileInvalid:
            raise
        except (OSError, ssl.SSLError, ValueError) as err:
            raise ServeRefused(f"--tls-cert/--tls-key/--tls-client-ca: cannot load ({err})") from None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self.client_ca is not None)

    def reload(self) -> None:
        """Re-read and check the files now, and log the outcome: new handshakes take them; a
        file that cannot be used keeps the current configuration."""
        try:
            config = self._read()
        except (TlsFileInvalid, OSError, ssl.SSLError, ValueError) as err:
            logger.error("TLS reload failed, keeping the current certificate: %s", err)
            return
        with self._lock:
            self._next = config
        logger.info("TLS certificate reloaded from %s", self.cert)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake; None keeps the current configuration."""
        with self._lock:
            config, self._next = self._next, None
        return config

    def check(self) -> None:
        """Raise `TlsFileInvalid` naming the first file that cannot be used as it is now (for
        the HTTPS endpoints' reloads, which load the files through `ssl` themselves)."""
        self._read()

    def _read(self) -> grpc.ServerCertificateConfiguration:
        """The files as gRPC takes them, each read once and checked (`TlsFileInvalid` names
        the first bad one)."""
        cert_pem, key_pem = _read_bytes("--tls-cert", self.cert), _read_bytes("--tls-key", self.key)
        _warn_if_readable_by_all(self.key)
        leaf = _certificates("--tls-cert", self.cert, cert_pem)[0]
        _check_validity(self.cert, leaf)
        key = _private_key(self.key, key_pem)
        public = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if leaf.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
            raise TlsFileInvalid("--tls-key", self.key, f"not the key of --tls-cert {self.cert}")
        roots = None
        if self.client_ca is not None:
            _trusted_ca(self.client_ca)
            roots = _read_bytes("--tls-client-ca", self.client_ca)
            if b"-----BEGIN TRUSTED CERTIFICATE-----" not in roots:  # OpenSSL's trust form:
                _certificates("--tls-client-ca", self.client_ca, roots)  # gRPC reads it as is
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)],
                                                         root_certificates=roots)

    def reload_context(self, ctx: ssl.SSLContext) -> None:
        """Make the new connections of `ctx` (the /metrics endpoint's listening context) use
        the files as they are now. Loading them into `ctx` would only add to its trust store (a
        client CA taken out of the file stayed trusted), so a fresh context is built and every
        handshake switches to it: the SNI callback runs on each ClientHello, server name or not."""
        try:
            self.check()
            fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            fresh.minimum_version, fresh.options = ctx.minimum_version, ctx.options
            fresh.load_cert_chain(self.cert, self.key, password=no_passphrase(self.key))
            if self.client_ca is not None:
                _trusted_ca(self.client_ca)
                fresh.load_verify_locations(self.client_ca)
            fresh.verify_mode = ctx.verify_mode
        except (TlsFileInvalid, OSError, ssl.SSLError) as err:
            logger.error("TLS reload (HTTP) failed, keeping the current certificate: %s", err)
            return

        def switch(sock, server_name: str | None, current: ssl.SSLContext) -> None:
            sock.context = fresh
        ctx.sni_callback = switch


def metrics_context(tls: ServerTls) -> ssl.SSLContext:
    """The /metrics endpoint's server context: `tls`'s certificate, and its client CA required
    when it has one (`ServerTls.reload_context` re-reads both on SIGHUP)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert, tls.key, password=no_passphrase(tls.key))
    if tls.client_ca is not None:
        ctx.load_verify_locations(tls.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def no_passphrase(key: Path):
    """A `password` for `SSLContext.load_cert_chain` that refuses a locked `key` instead of
    letting OpenSSL prompt on the terminal (which blocks the caller until someone types)."""
    def refuse():
        raise TlsFileInvalid("--tls-key", key, _LOCKED)
    return refuse


_LOCKED = ("the key is encrypted (a passphrase-protected key is not supported: store it "
           "decrypted, readable by the server only, e.g. `openssl pkey -in K -out K.plain`)")


def _trusted_ca(path: Path) -> None:
    """Refuse a client CA every user may write, as the auth config: anyone could add a CA of
    their own and issue themselves the certificate of a principal."""
    try:
        unsafe = writable_by_all(path, "add a CA and issue themselves any principal's certificate")
    except OSError as err:
        raise TlsFileInvalid("--tls-client-ca", path, err.strerror or str(err)) from None
    if unsafe:
        raise TlsFileInvalid("--tls-client-ca", path, unsafe)


def _warn_if_readable_by_all(key: Path) -> None:
    """Warn about a `--tls-key` every user of the host may read (as about a keyring): anyone
    could copy it and pass for this server, to clients that then send it their tokens. Not
    refused: a container's secret mount may be 0444 (or Kubernetes' default 0644)."""
    try:
        mode = stat.S_IMODE(key.stat().st_mode)
    except OSError:  # gone since it was read: the next read says so
        return
    if mode & stat.S_IROTH:
        logger.warning("--tls-key %s: every user may read it (mode %04o), so anyone on this host "
                       "could copy the server's private key and pass for it; chmod o-r unless it "
                       "is a container's own mount", key, mode)


def _read_bytes(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise TlsFileInvalid(flag, path, err.strerror or str(err)) from None


def _certificates(flag: str, path: Path, pem: bytes) -> list[x509.Certificate]:
    """The PEM certificates in `pem` (the file `path`), the first one the leaf; at least one."""
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError:
        found = []
    if not found:
        raise TlsFileInvalid(flag, path, "no PEM certificate in it (-----BEGIN CERTIFICATE-----)")
    return found


def _check_validity(path: Path, leaf: x509.Certificate) -> None:
    """Refuse a certificate outside its validity window: served, every client's handshake
    failed (a reload of an expired certificate was taken, and no new connection succeeded)."""
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc < now:
        raise TlsFileInvalid("--tls-cert", path, f"the certificate expired on "
                             f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC: every client "
                             "would refuse it; install a renewed one")
    ahead = leaf.not_valid_before_utc - now
    if ahead > CLOCK_SKEW:
        raise TlsFileInvalid("--tls-cert", path, f"the certificate is not valid until "
                             f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC: every client "
                             "would refuse it until then (check this host's clock)")
    if ahead > dt.timedelta(0):
        logger.warning("--tls-cert %s: the certificate is valid from %s UTC, %.0f s ahead of this "
                       "host's clock: clients whose clocks are as late refuse it until then "
                       "(check this host's clock)", path,
                       f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S}", ahead.total_seconds())


def _private_key(path: Path, pem: bytes):
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise TlsFileInvalid("--tls-key", path, _LOCKED) from None
    except ValueError as err:
        why = "no PEM private key in it" if b"PRIVATE KEY-----" not in pem else f"unreadable ({err})"
        raise TlsFileInvalid("--tls-key", path, why) from None
