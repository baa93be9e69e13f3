"""How a client reaches the server: plaintext or TLS (optionally with a client certificate for
mutual TLS), and a bearer token sent as `authorization: Bearer <token>` on every call.

One `Connection` (picklable, so load generator processes can take it) builds sync and asyncio
channels; `add_arguments`/`from_args` give every CLI the same `--tls-ca --cert --key --token
--insecure`. Over TLS the token travels as call credentials; gRPC refuses those on a plaintext
channel, so there (loopback) an interceptor adds the same header. A token never goes in
plaintext to a host that is not loopback unless `insecure` (`--insecure`) says so: a channel to
one is refused before any connection (`Connection.check_token_target`), as the server refuses to
listen in plaintext off loopback without its own `--insecure`.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import grpc

from contract.hosts import is_loopback

__all__ = ["Connection", "add_arguments", "check_target"]

TOKEN_ENV = "TAILOR_TOKEN"


@dataclass(frozen=True)
class Connection:
    tls_ca: Path | None = None
    """PEM CA that signed the server's certificate (TLS on); None with `tls`: system roots."""
    cert: Path | None = None
    """PEM client certificate (mutual TLS), with `key`."""
    key: Path | None = None
    token: str | None = None
    """Bearer token for every call."""
    tls: bool = False
    """TLS with the system's roots even without `tls_ca`."""
    insecure: bool = False
    """Send `token` in plaintext to a host that is not loopback anyway; otherwise refused."""

    def __post_init__(self):
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key: give both --cert and --key")
        object.__setattr__(self, "token", _checked_token(self.token))

    def __repr__(self) -> str:  # never print the token
        return (f"Connection(tls={self.secure}, tls_ca={self.tls_ca}, cert={self.cert}, "
                f"token={'set' if self.token else None})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Connection:
        return cls(tls_ca=_path(args.tls_ca), cert=_path(args.cert), key=_path(args.key),
                   token=args.token or None, insecure=args.insecure)

    @property
    def secure(self) -> bool:
        return self.tls or self.tls_ca is not None or self.cert is not None

    def credentials(self, call_token: bool = True) -> grpc.ChannelCredentials:
        """TLS credentials from the PEM files (ValueError naming the flag of one not read, or
        not PEM), with the token as call credentials unless not `call_token`."""
        creds = grpc.ssl_channel_credentials(_read("--tls-ca", self.tls_ca, CERTIFICATE),
                                             _read("--key", self.key, PRIVATE_KEY),
                                             _read("--cert", self.cert, CERTIFICATE))
        if self.token and call_token:
            creds = grpc.composite_channel_credentials(
                creds, grpc.access_token_call_credentials(self.token))
        return creds

    def check_token_target(self, target: str) -> None:
        """ValueError, before any connection, for a token that would go in plaintext to a
        `target` whose host is not loopback (127.0.0.0/8, ::1, `localhost`; a Unix socket is
        local): whoever answers there (a typo, a forgotten --tls-ca, a name that resolves
        elsewhere) or listens on the way would read it. `insecure` sends it anyway."""
        if not self.token or self.secure or self.insecure:
            return
        host = _remote_host(target)
        if host is not None:
            raise ValueError(f"--token: not sent in plaintext to {host}, which is not a loopback "
                             "address (whoever answers there, or listens on the way, would read "
                             "it): give --tls-ca to use TLS, or --insecure to send it anyway")

    def channel(self, target: str, options=(), token_as_header: bool = False) -> grpc.Channel:
        """A blocking channel to `target`. Over TLS the token goes as call credentials, unless
        `token_as_header`: then, as over plaintext, as the `authorization` header added to each
        call (under gevent, whose calls hang on the thread gRPC runs call credentials on:
        `loadtests.grpc_user.channel`)."""
        check_target(target)
        self.check_token_target(target)
        header = bool(self.token) and (token_as_header or not self.secure)
        channel = (grpc.secure_channel(target, self.credentials(call_token=not header),
                                       options=list(options)) if self.secure
                   else grpc.insecure_channel(target, options=list(options)))
        return grpc.intercept_channel(channel, _BearerToken(self.token)) if header else channel

    def aio_channel(self, target: str, options=()) -> grpc.aio.Channel:
        check_target(target)
        self.check_token_target(target)
        if self.secure:
            return grpc.aio.secure_channel(target, self.credentials(), options=list(options))
        interceptors = _aio_bearer_token(self.token) if self.token else None
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)


def _path(value: str | Path | None) -> Path | None:
    """A file flag's value as a Path (Locust's parser gives str: `add_arguments`)."""
    return None if value is None else Path(value)


def check_target(target: str, flag: str = "--server") -> None:
    """ValueError naming `flag` for a server address gRPC would misread: an empty one (C-core
    log lines, then UNKNOWN), a URL (http://, grpc://: looked up as a host name) or a port past
    65535, which gRPC takes modulo 65536 (`host:99999` dials 34463)."""
    if not target.strip():
        raise ValueError(f"{flag}: an empty address (give host:port)")
    url = re.match(r"(https?|grpcs?)://", target, re.IGNORECASE)
    if url:  # gRPC looks the whole of it up as a host name (UNAVAILABLE: errors resolving)
        raise ValueError(f"{flag} {target}: give host:port, without {url[1]}://")
    port = re.search(r":(\d+)$", target)
    if port and not 0 < int(port[1]) < 65536 and not target.startswith(("unix:", "unix-abstract:")):
        raise ValueError(f"{flag} {target}: port {port[1]} is not in 1..65535")


def _remote_host(target: str) -> str | None:
    """The host of a gRPC `target` that may be off this machine, or None for one on it: a Unix
    socket (`unix:`, `unix-abstract:`) or loopback hosts only. `dns:` (with or without an
    authority, whose DNS server may answer anything for `localhost`) and `ipv4:`/`ipv6:` address
    lists are read through; every address of a list must be loopback. Any other name, address
    (0.0.0.0 too, as the server's rule has it) or scheme counts as off this machine."""
    if target.startswith(("unix:", "unix-abstract:")):
        return None
    dns = re.match(r"dns:(?://([^/]*)/)?", target, re.IGNORECASE)  # [1]: a DNS server
    rest = target[dns.end():] if dns else target
    listed = re.match(r"ipv[46]:", rest, re.IGNORECASE)
    for address in rest[listed.end():].split(",") if listed else [rest]:
        host = _host(address)
        if not is_loopback(host) or (dns and dns[1] and host.lower() == "localhost"):
            return host
    return None


def _host(address: str) -> str:
    """The host of `host:port`, `[v6]:port`, or a bare host or IPv6 address."""
    bracketed = re.fullmatch(r"\[([^\]]*)\](?::\d*)?", address)
    if bracketed:
        return bracketed[1]
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def _checked_token(token: str | None) -> str | None:
    """The token without the whitespace around it (a file or a mounted secret ends with a
    newline, which no header can hold); ValueError naming --token for one that a header cannot
    carry as `Bearer <token>` (RFC 6750: printable ASCII, no spaces). Never echoes the token."""
    if not token:
        return None
    stripped = token.strip()
    if not stripped:
        raise ValueError("--token: only whitespace")
    bad = next((c for c in stripped if not "\x21" <= c <= "\x7e"), None)
    if bad is not None:
        what = "a space" if bad.isspace() else "a control character" if bad < " " or \
            bad == "\x7f" else "a non-ASCII character"
        raise ValueError(f"--token: a bearer token is printable ASCII with no spaces; this one "
                         f"holds {what}")
    return stripped


CERTIFICATE = ("certificate", re.compile(rb"-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----"))
PRIVATE_KEY = ("private key", re.compile(rb"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----"))
"""The PEM block each flag's file must hold, named as the server names its own files'. A
certificate may also be OpenSSL's `TRUSTED CERTIFICATE` (`openssl x509 -trustout`, Fedora's
*.trust.crt bundles) or the old `X509 CERTIFICATE`, which gRPC reads too."""
_ENCRYPTED_HEADER = re.compile(rb"^Proc-Type:\s*4,\s*ENCRYPTED", re.MULTILINE)
"""The header of a passphrase-protected key in OpenSSL's traditional form (`genrsa -aes128`)."""


def _read(flag: str, path: Path | None, block: tuple[str, re.Pattern]) -> bytes | None:
    """The file's bytes; ValueError naming `flag` for one not read, not PEM, or without the
    PEM `block` it needs: gRPC took any PEM, and a key given as --tls-ca (or --cert and --key
    swapped) failed every call UNAVAILABLE ("failed to create security handshaker") after four
    C-core log lines naming neither the flag nor the file."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{flag} {path}: {(err.strerror or str(err)).lower()}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
    what, pattern = block
    if block is PRIVATE_KEY and (b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data  # PKCS#8
                                 or _ENCRYPTED_HEADER.search(data)):  # traditional (RSA, EC)
        raise ValueError(f"{flag} {path}: the key is encrypted (a passphrase-protected key is "
                         "not supported: e.g. `openssl pkey -in K -out K.plain`)")
    if not pattern.search(data):
        raise ValueError(f"{flag} {path}: no PEM {what} in it "
                         f"({re.sub(r'[(][?]:.*?[)][?]', '', pattern.pattern.decode())})")
    return data


def add_arguments(parser: argparse.ArgumentParser, path: type = Path, **extra) -> None:
    """--tls-ca, --cert, --key, --token (default: env TAILOR_TOKEN), --insecure; `path`: the type the file
    flags parse to (Locust's parser: str, as its master sends its options to its workers as
    msgpack, which holds no Path); `extra`: more keyword arguments of each (Locust's parser:
    `include_in_web_ui=False`)."""
    parser.add_argument("--tls-ca", type=path, help="PEM CA of the server's certificate: TLS on",
                        **extra)
    parser.add_argument("--cert", type=path, help="PEM client certificate (mutual TLS; TLS on)",
                        **extra)
    parser.add_argument("--key", type=path, help="PEM private key of --cert", **extra)
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token sent with every call (default: env {TOKEN_ENV})",
                        **extra)
    parser.add_argument("--insecure", action="store_true",
                        help="send --token without TLS to a server that is not loopback anyway "
                             "(refused otherwise: anyone on the way could read it)", **extra)


def _with_token(details, token: str):
    """The call's details with the header added (sync and aio details are both namedtuples)."""
    return details._replace(metadata=[*(details.metadata or ()), ("authorization", f"Bearer {token}")])


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(_with_token(details, self._token), request)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(_with_token(details, self._token), request_iterator)

    intercept_stream_stream = intercept_stream_unary


class _AioBearerToken:
    """The header on asyncio calls, as `_BearerToken`. grpc.aio files an interceptor under the
    first kind of call it is, so each kind gets its own (`_aio_bearer_token`): a unary-unary
    one alone sent TrackEventStream and the exports without it (UNAUTHENTICATED)."""

    def __init__(self, token: str):
        self._token = token

    async def _intercept(self, continuation, details, request):
        return await continuation(_with_token(details, self._token), request)


class _AioUnaryUnary(_AioBearerToken, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _AioBearerToken._intercept


class _AioUnaryStream(_AioBearerToken, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _AioBearerToken._intercept


class _AioStreamUnary(_AioBearerToken, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _AioBearerToken._intercept


class _AioStreamStream(_AioBearerToken, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _AioBearerToken._intercept


def _aio_bearer_token(token: str) -> list[_AioBearerToken]:
    return [kind(token) for kind in (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary,
                                     _AioStreamStream)]
