"""Authentication: who is calling, from a bearer token, a JWT or the mTLS client certificate.

Roles come only from here (the auth config or a verified JWT), never from request metadata.
"""
from __future__ import annotations

from ..errors import Unauthenticated
from .jwt_verify import FailureBudget, JwtVerifier
from .principals import AuthConfig, Principal, token_hash
from .roles import PII_READER, ROLE_NAMES

__all__ = ["Authenticator", "DEV_PRINCIPAL"]

DEV_PRINCIPAL = Principal("anonymous", ROLE_NAMES - {PII_READER})
"""Everyone, on a server without an auth config: every role but `pii-reader` (PII stays masked:
nobody can unmask it by claiming a role, and a config with one pii-reader token takes a line)."""

_CERT_KEYS = ("x509_common_name", "x509_subject_alternative_name")


class Authenticator:
    """`principal(metadata, auth_context, peer)` → the caller, or raises `Unauthenticated`;
    `jwt_budget` bounds the failed JWT checks per client address (kept across reloads by
    whoever passes the same one)."""

    def __init__(self, config: AuthConfig | None, jwt_budget: FailureBudget | None = None):
        self.config = config
        self.by_token = config.by_token if config else {}
        self.by_cert = config.by_cert if config else {}
        self.jwt = JwtVerifier(config.jwt, jwt_budget) if config and config.jwt else None

    def principal(self, metadata, auth_context, peer: str | None = "") -> Principal:
        """`metadata`: (key, value) pairs; `auth_context`: a callable returning the transport's
        auth context (called only when no bearer credential came and certificates are known);
        `peer`: the caller's address (`context.peer()`), charged for a JWT that fails its check
        (None: a check nobody is charged for)."""
        if self.config is None:
            return DEV_PRINCIPAL
        bearer = _authorization(metadata)
        if bearer is not None:
            return self._bearer(bearer, peer)
        if self.by_cert:
            found = self.from_certificate(auth_context())
            if found is not None:
                return found
        raise Unauthenticated("no credentials: send `authorization: Bearer <token>` or a client "
                              "certificate")

    def known(self, metadata) -> Principal | None:
        """The caller, when `metadata` alone names them at no cost worth guarding: no auth
        config, a minted token, or a JWT verified before and not expired. None otherwise: the
        call then authenticates with its transport (`principal`) before its request is read."""
        if self.config is None:
            return DEV_PRINCIPAL
        token = _token(_authorization(metadata))
        if token is None:
            return None
        found = self.by_token.get(token_hash(token))
        if found is None and self.jwt is not None:
            return self.jwt.cached(token)
        return found

    def _bearer(self, header: str, peer: str | None) -> Principal:
        token = _token(header)
        if token is None:
            raise Unauthenticated("authorization metadata must be `Bearer <token>`")
        found = self.by_token.get(token_hash(token))
        if found is not None:
            return found
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt.principal(token, peer)
        raise Unauthenticated("unknown bearer token")

    def from_certificate(self, auth_context: dict) -> Principal | None:
        """The principal of the first certificate CN or SAN the config names (`auth_context`
        as grpc gives it: property name → list of bytes)."""
        for key in _CERT_KEYS:
            for raw in (auth_context or {}).get(key, ()):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                found = self.by_cert.get(name)
                if found is not None:
                    return found
        return None


def _authorization(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return None


def _token(header: str | None) -> str | None:
    """The token of a `Bearer <token>` header (None: no header, or not one)."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
