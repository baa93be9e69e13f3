"""Bearer JWTs: RS256/ES256 signatures against configured public keys or a JWKS file; issuer,
audience and expiry checked; roles from a claim. A verified token is cached until it expires,
so a client that reuses its token pays one dict hit per call, not a signature check. A client
address whose JWTs keep failing is refused further unknown ones without a check for a while
(`FailureBudget`): anyone who reaches the port could otherwise spend the event loop on them."""
from __future__ import annotations

import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..errors import Unauthenticated
from .errors import AuthConfigInvalid
from .failures import peer_host
from .principals import JwtSettings, Principal, writable_by_all

__all__ = ["JwtVerifier", "FailureBudget"]

_CACHE_MAX = 10_000
_KEY_TYPES = {"RS": RSAPublicKey, "PS": RSAPublicKey, "ES": EllipticCurvePublicKey}


class FailureBudget:
    """Failed JWT verifications per client address (`peer_host`) in fixed intervals of
    `seconds`: past `most` in one, `refused(peer)` says why its next unknown JWT is not checked.
    At most `peers` addresses are counted an interval (further ones are not limited: a crowd of
    addresses must not lock out the others). `most` 0: no bound."""

    def __init__(self, most: int, seconds: float, peers: int = 4096):
        self.most, self.seconds, self.peers = most, seconds, peers
        self._counts: dict[str, list] = {}  # host -> [failures, the last reason]
        self._ends = 0.0

    def _interval(self) -> dict[str, list]:
        now = time.monotonic()
        if now >= self._ends:
            self._counts, self._ends = {}, now + self.seconds
        return self._counts

    def refused(self, peer: str | None) -> str | None:
        """Why a JWT from `peer` is refused unchecked (None: check it; `peer` None: a check
        not charged to any address, an open stream's caller checked again)."""
        if not self.most or peer is None:
            return None
        counted = self._interval().get(peer_host(peer))
        if counted is None or counted[0] < self.most:
            return None
        return (f"too many invalid tokens from this address (the last: {counted[1]}); new ones "
                f"are not checked for up to {self.seconds:g} s")

    def failed(self, peer: str | None, reason: str) -> None:
        if not self.most or peer is None:
            return
        counts, host = self._interval(), peer_host(peer)
        counted = counts.get(host)
        if counted is None:
            if len(counts) >= self.peers:
                return
            counted = counts[host] = [0, reason]
        counted[0] += 1
        counted[1] = reason


class JwtVerifier:
    def __init__(self, settings: JwtSettings, budget: FailureBudget | None = None):
        self.settings = settings
        self.budget = budget or FailureBudget(0, 1.0)
        self._keys = self._load_keys(settings)
        self._cache: dict[str, tuple[Principal, float]] = {}

    @staticmethod
    def _load_keys(s: JwtSettings) -> list[tuple[str | None, object]]:
        """(kid or None, public key) of every configured file; `AuthConfigInvalid` names the
        field and the file that cannot be used."""
        keys: list[tuple[str | None, object]] = []
        for path in s.key_files:
            try:
                _trusted(s, "jwt.public_keys", path)
                keys.append((None, load_pem_public_key(path.read_bytes())))
            except ValueError:
                raise AuthConfigInvalid(s.source, f"jwt.public_keys {path}: not a PEM public key "
                                                  "(-----BEGIN PUBLIC KEY-----)") from None
            except OSError as err:
                raise AuthConfigInvalid(s.source, f"jwt.public_keys {path}: {err.strerror or err}") from None
        if s.jwks_file is not None:
            try:
                _trusted(s, "jwt.jwks", s.jwks_file)
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

    def principal(self, token: str, peer: str | None = "") -> Principal:
        """The token's principal (cached until it expires); `peer`, the caller's address, is
        charged for a token that fails its check (`FailureBudget`; None: nobody is). An expired
        token is refused before its signature is checked, and charges nothing: a client
        reconnecting with a stale token is not an attacker, and costs no signature check."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        refused = self.budget.refused(peer)
        if refused is not None:
            raise Unauthenticated(refused)
        _refuse_expired(token, self.settings.leeway_seconds)
        try:
            claims = self._verify(token)
        except Unauthenticated as err:
            self.budget.failed(peer, str(err))
            raise
        try:
            roles = _roles(claims.get(self.settings.roles_claim, []), self.settings.roles_claim)
        except Unauthenticated as err:  # checked again at every call: charged like a failure
            self.budget.failed(peer, str(err))
            raise
        principal = Principal(f"jwt:{claims.get('sub', '?')}", roles)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[token] = (principal, float(claims["exp"]) + self.settings.leeway_seconds)
        return principal

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and not expired (None: check it)."""
        hit = self._cache.get(token)
        return hit[0] if hit is not None and hit[1] > time.time() else None

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


def _trusted(s: JwtSettings, field: str, path) -> None:
    """Refuse a key file every user may write, as the auth config itself (anyone could put
    their own key in and sign themselves any role)."""
    unsafe = writable_by_all(path, "sign themselves a token with any role")
    if unsafe:
        raise AuthConfigInvalid(s.source, f"{field} {path}: {unsafe}")


def _roles(claim, name: str) -> frozenset[str]:
    """The roles of a verified token's `name` claim: a space-separated string or a list of
    strings. Anything else (a number, an object whose keys would read as roles) is refused:
    the issuer meant something this server does not understand."""
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(r, str) for r in claim):
        return frozenset(claim)
    raise Unauthenticated(f"the token's {name[:32]!r} claim is not a list of role names")


def _refuse_expired(token: str, leeway: float) -> None:
    """`Unauthenticated("token expired")` for a token whose (unverified) `exp` has passed:
    nothing it claims could pass, so its signature is not checked. Other problems are left to
    the check."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        return
    if isinstance(exp, (int, float)) and not isinstance(exp, bool) and exp + leeway < time.time():
        raise Unauthenticated("token expired")
