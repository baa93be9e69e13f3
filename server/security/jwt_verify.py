"""Bearer JWTs: RS256/ES256 signatures against configured public keys or a JWKS file; issuer,
audience and expiry checked; roles from a claim. A verified token is cached until it expires,
so a client that reuses its token pays one dict hit per call, not a signature check."""
from __future__ import annotations

import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..errors import Unauthenticated
from .errors import AuthConfigInvalid
from .principals import JwtSettings, Principal

__all__ = ["JwtVerifier"]

_CACHE_MAX = 10_000
_KEY_TYPES = {"RS": RSAPublicKey, "PS": RSAPublicKey, "ES": EllipticCurvePublicKey}


class JwtVerifier:
    def __init__(self, settings: JwtSettings):
        self.settings = settings
        self._keys = self._load_keys(settings)
        self._cache: dict[str, tuple[Principal, float]] = {}

    @staticmethod
    def _load_keys(s: JwtSettings) -> list[tuple[str | None, object]]:
        """(kid or None, public key) of every configured file; `AuthConfigInvalid` names the
        field and the file that cannot be used."""
        keys: list[tuple[str | None, object]] = []
        for path in s.key_files:
            try:
                keys.append((None, load_pem_public_key(path.read_bytes())))
            except ValueError:
                raise AuthConfigInvalid(s.source, f"jwt.public_keys {path}: not a PEM public key "
                                                  "(-----BEGIN PUBLIC KEY-----)") from None
            except OSError as err:
                raise AuthConfigInvalid(s.source, f"jwt.public_keys {path}: {err.strerror or err}") from None
        if s.jwks_file is not None:
            try:
                doc = json.loads(s.jwks_file.read_text())
                if not isinstance(doc, dict):
                    raise ValueError('a JWKS is a JSON object: {"keys": [...]}')
                jwks = jwt.PyJWKSet.from_dict(doc)
            except OSError as err:
                raise AuthConfigInvalid(s.source, f"jwt.jwks {s.jwks_file}: {err.strerror or err}") from None
            except (ValueError, jwt.PyJWTError) as err:  # json.JSONDecodeError is a ValueError
                raise AuthConfigInvalid(s.source, f"jwt.jwks {s.jwks_file}: not a usable JWKS "
                                                  f"({err})") from None
            keys += [(k.key_id, k.key) for k in jwks.keys]
        return keys

    def principal(self, token: str) -> Principal:
        hit = self._cache.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        claims = self._verify(token)
        roles = claims.get(self.settings.roles_claim, [])
        if isinstance(roles, str):
            roles = roles.split()
        principal = Principal(f"jwt:{claims.get('sub', '?')}", frozenset(map(str, roles)))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (principal, float(claims["exp"]) + self.settings.leeway_seconds)
        return principal

    def _verify(self, token: str) -> dict:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in s.algorithms:
            raise Unauthenticated(f"token algorithm {str(alg)[:8]!r} is not accepted")
        kind = _KEY_TYPES[alg[:2]]
        candidates = [k for i, k in self._keys
                      if isinstance(k, kind) and (kid is None or i is None or i == kid)]
        problem = "no key matches the token"
        for key in candidates:
            try:
                return jwt.decode(token, key, algorithms=list(s.algorithms), audience=s.audience,
                                  issuer=s.issuer, leeway=s.leeway_seconds,
                                  options={"require": ["exp", "iss", "aud"]})
            except jwt.InvalidSignatureError:
                problem = "bad signature"
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("token expired") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("token audience is not this server") from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated("token issuer is not trusted") from None
            except (jwt.PyJWTError, TypeError, ValueError) as err:
                raise Unauthenticated(f"invalid token ({type(err).__name__})") from None
        raise Unauthenticated(f"invalid token ({problem})")
