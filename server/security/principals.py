"""Principals and the auth config they come from (TOML, read with `tomllib`).

    [jwt]                                  # optional: bearer JWTs
    issuer = "https://id.example.com"
    audience = "tailor"
    public_keys = ["jwt-signing.pem"]      # RS256/ES256 public keys (PEM), or:
    jwks = "jwks.json"                     # a JWKS file (paths relative to this file)
    roles_claim = "roles"                  # a list, or a space-separated string

    [roles]                                # optional: redefine or add roles (method patterns)
    analyst = ["/tailor.v1.CampaignService/Get*"]

    [principals.ingest]                    # a bearer token, stored only as its SHA-256
    roles = ["tracker"]
    token_sha256 = "9f86d0..."

    [principals.ops]                       # an mTLS client certificate (CN or a SAN)
    roles = ["admin"]
    cert_subject = "ops.tailor.internal"
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AuthConfigInvalid, AuthConfigUnreadable
from .roles import ANY_AUTHENTICATED, ROLE_NAMES, RoleTable

__all__ = ["AuthConfig", "JwtSettings", "Principal", "load_auth_config", "token_hash",
           "writable_by_all", "replaceable_through", "directories_to_make"]

TOKEN_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
MAX_LEEWAY_SECONDS = 3600
"""Most `jwt.leeway_seconds`: how long past its `exp` a JWT may still pass (clock skew)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name (for logs and the audit log) and the roles granted to it."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def has(self, role: str) -> bool:
        return role in self.roles


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    audience: str
    key_files: tuple[Path, ...] = ()
    jwks_file: Path | None = None
    roles_claim: str = "roles"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_seconds: float = 0.0
    source: Path | None = None
    """The auth config these came from (errors about a key file name both)."""


@dataclass
class AuthConfig:
    """Everything one auth config file says, indexed for one dict hit per call."""

    path: Path
    by_token: dict[str, Principal]
    """SHA-256 hex of a bearer token → its principal."""
    by_cert: dict[str, Principal]
    """Certificate CN or SAN → its principal."""
    roles: RoleTable
    jwt: JwtSettings | None = None


def _strings(path, where: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthConfigInvalid(path, f"{where} must be a list of strings")
    return value


def _table(path, where: str, value) -> dict:
    if not isinstance(value, dict):
        raise AuthConfigInvalid(path, f"{where} must be a table")
    return value


def _text(path, where: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise AuthConfigInvalid(path, f"{where} must be a non-empty string")
    return value


def _token_sha256(path, name: str, value) -> str:
    """The token hash as stored (lower-case hex); anything else could never match a token."""
    if not isinstance(value, str) or not TOKEN_SHA256.fullmatch(value):
        raise AuthConfigInvalid(path, f"principals.{name}.token_sha256 must be 64 hex digits "
                                      "(the SHA-256 of the token: `python -m server token`)")
    return value.lower()


def _principal(path, name: str, entry, known_roles: Iterable[str]) -> Principal:
    entry = _table(path, f"principals.{name}", entry)
    roles = frozenset(_strings(path, f"principals.{name}.roles", entry.get("roles", [])))
    unknown = roles - set(known_roles)
    if unknown:
        raise AuthConfigInvalid(path, f"principals.{name}: unknown roles {sorted(unknown)} "
                                      f"(the roles: {', '.join(sorted(known_roles))})")
    if not ("token_sha256" in entry or "cert_subject" in entry):
        raise AuthConfigInvalid(path, f"principals.{name} needs token_sha256 or cert_subject")
    return Principal(name, roles)


def _roles(path, raw) -> dict[str, list[str]]:
    """The `[roles]` table: role -> method patterns. `*` is no role a config may define: it is
    the pseudo-role of any authenticated caller (`roles.ANY_AUTHENTICATED`), so the methods it
    named were opened to every principal, whatever its roles (a tracker could DeleteProfile)."""
    roles = _table(path, "roles", raw)
    if ANY_AUTHENTICATED in roles:
        raise AuthConfigInvalid(path, f"roles.\"{ANY_AUTHENTICATED}\": \"{ANY_AUTHENTICATED}\" "
                                      "stands for any authenticated caller, whatever its roles: "
                                      "it would open the methods it names to every principal; "
                                      "name the role and grant it to the principals that need it")
    return {r: _strings(path, f"roles.{r}", p) for r, p in roles.items()}


def _leeway(path, value) -> float:
    """A clock-skew allowance: bounded, since an expired JWT passes for as long (`inf` for good)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 <= value <= MAX_LEEWAY_SECONDS):
        raise AuthConfigInvalid(path, "jwt.leeway_seconds must be a number of seconds, 0 to "
                                      f"{MAX_LEEWAY_SECONDS}")
    return float(value)


def _jwt(path: Path, raw) -> JwtSettings | None:
    if raw is None:
        return None
    raw = _table(path, "jwt", raw)
    for required in ("issuer", "audience"):
        if required not in raw:
            raise AuthConfigInvalid(path, f"jwt.{required} is required")
    keys = tuple(path.parent / k for k in _strings(path, "jwt.public_keys", raw.get("public_keys", [])))
    jwks = (path.parent / _text(path, "jwt.jwks", raw["jwks"])
            if raw.get("jwks", "") != "" else None)  # "" or absent: no JWKS file, as before
    out = JwtSettings(issuer=_text(path, "jwt.issuer", raw["issuer"]),
                      audience=_text(path, "jwt.audience", raw["audience"]), key_files=keys,
                      jwks_file=jwks, roles_claim=_text(path, "jwt.roles_claim",
                                                        raw.get("roles_claim", "roles")),
                      algorithms=tuple(_strings(path, "jwt.algorithms",
                                                raw.get("algorithms", ["RS256", "ES256"]))),
                      leeway_seconds=_leeway(path, raw.get("leeway_seconds", 0.0)), source=path)
    if not keys and jwks is None:
        raise AuthConfigInvalid(path, "jwt needs public_keys or jwks")
    if not out.algorithms or any(a[:2] not in ("RS", "PS", "ES") for a in out.algorithms):
        raise AuthConfigInvalid(path, "jwt.algorithms: only public-key ones (RS*, PS*, ES*)")
    return out


def _add(path, index: dict[str, Principal], credential: str, principal: Principal, field: str) -> None:
    """Index `principal` by `credential`; one credential naming two principals is refused (the
    later one would silently take it: its roles, and its name in the audit log)."""
    other = index.get(credential)
    if other is not None:
        raise AuthConfigInvalid(path, f"principals.{principal.name}.{field} is also "
                                      f"principals.{other.name}'s: give each principal its own")
    index[credential] = principal


def writable_by_all(path: Path, what: str) -> str | None:
    """Why `path` may not be trusted when every user of the host may write it, or replace it
    (a directory on its way writable by all without the sticky bit, on a mount that is not
    read-only: anyone may rename a file of their own over it, or move a whole directory above
    it aside and put their own in its place, whatever the file's mode), whoever could `what` by
    doing so; None when they may not. The directories are every ancestor of the path as given,
    of each link it points through, and of the file it finally is (`_directories`).
    OSError when it cannot be read."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IWOTH:
        return f"every user may write it (mode {mode:04o}), so anyone could {what}; chmod o-w {path}"
    return replaceable_through(path, _directories(Path(path)), what)


def replaceable_through(path: Path, directories: Iterable[Path], what: str) -> str | None:
    """Why `path` may not be trusted (or made) when the first of `directories` (those whose
    change could put another file at it, nearest first) that every user may write without the
    sticky bit, on a mount that is not read-only, is open; None when none is. The refusal names
    that directory as what it is to `path`: its directory, one above it, or one above the file
    it links to. OSError when one cannot be read."""
    here = Path(os.path.abspath(path))
    for directory in directories:
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & stat.S_IWOTH or mode & stat.S_ISVTX:
            continue
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            continue
        where = (f"its directory {directory}" if directory == here.parent else
                 f"the directory {directory} above it" if directory in here.parents else
                 f"the directory {directory} above the file it links to")
        return (f"{where}: every user may write it (mode {mode:04o}), so anyone "
                f"could put a file or directory of their own in its place and {what}; "
                f"chmod o-w {directory}")
    return None


def directories_to_make(path: Path) -> list[Path]:
    """The directories whose change could put another directory at `path`, which is not there
    yet: its nearest ancestor that is (a dangling link counts as not there), then that one's
    (`_directories`), nearest first."""
    nearest = next(d for d in Path(os.path.abspath(path)).parents if d.exists())
    return [nearest, *_directories(nearest)]


MAX_LINKS = 40
"""Symlinks followed to find the directories a path depends on (as the kernel's limit)."""


def _directories(path: Path) -> list[Path]:
    """The directories whose change could put another file at `path`: the ancestors of the
    path as given, of every symlink it points through (a link's own directory decides what it
    points to), and of the real file; nearest first, each once."""
    hops, here = [Path(os.path.abspath(path))], Path(os.path.abspath(path))
    for _ in range(MAX_LINKS):
        if not here.is_symlink():
            break
        here = Path(os.path.abspath(here.parent / os.readlink(here)))
        hops.append(here)
    hops.append(Path(os.path.realpath(path)))
    seen: dict[Path, None] = {}
    for hop in hops:
        for directory in hop.parents:
            seen.setdefault(directory, None)
    return list(seen)


def load_auth_config(path: Path) -> AuthConfig:
    """Read and check `path`; raises `AuthConfigInvalid` naming the problem (one that every
    user may write among them: anyone could grant themselves any role at the next reload)."""
    try:
        unsafe = writable_by_all(Path(path), "grant themselves a role")
        if unsafe:
            raise AuthConfigInvalid(path, unsafe)
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AuthConfigInvalid(path, f"not UTF-8 text, as TOML is (byte {err.start}); save it "
                                      "as UTF-8") from None
    except OSError as err:
        raise AuthConfigUnreadable(path, err) from None
    except tomllib.TOMLDecodeError as err:
        raise AuthConfigInvalid(path, str(err)) from None
    overrides = _roles(path, raw.get("roles", {}))
    known = ROLE_NAMES | set(overrides)
    by_token, by_cert = {}, {}
    for name, entry in _table(path, "principals", raw.get("principals", {})).items():
        principal = _principal(path, name, entry, known)
        if "token_sha256" in entry:
            _add(path, by_token, _token_sha256(path, name, entry["token_sha256"]), principal,
                 "token_sha256")
        if "cert_subject" in entry:
            _add(path, by_cert, _text(path, f"principals.{name}.cert_subject", entry["cert_subject"]),
                 principal, "cert_subject")
    return AuthConfig(Path(path), by_token, by_cert, RoleTable(overrides), _jwt(Path(path), raw.get("jwt")))
