"""`python -m server token`: mint a bearer token for a principal (only its SHA-256 is written
into the auth config) or revoke one. Running servers pick the change up on SIGHUP.

The stdlib reads TOML but does not write it; the auth config's schema is small (tables of
strings, numbers, booleans and lists of strings, nested by name), so `dumps` writes that and
nothing more. Comments in the file are not kept.
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import tomllib
from pathlib import Path

from .. import durable
from .errors import AuthConfigInvalid, PrincipalExists
from .files import cannot_write, directory_locked, keep_owner, write_private
from .principals import Principal, load_auth_config, token_hash

__all__ = ["dumps", "grant", "mint", "new_token", "revoke"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(path, v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(path, x) for x in v) + "]"
    raise AuthConfigInvalid(path, f"cannot write a {type(v).__name__} value")


def dumps(doc: dict, path: Path | str = "auth config", prefix: str = "") -> str:
    """TOML for `doc`: plain values first, then one [table] per nested dict."""
    lines = [f"{_key(k)} = {_value(path, v)}" for k, v in doc.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_key(k)}" if prefix else _key(k)
            body = dumps(v, path, name)
            if any(not isinstance(x, dict) for x in v.values()) or not v:
                body = f"[{name}]\n" + body
            out += ("\n" if out else "") + body
    return out


def _read(path: Path) -> dict:
    """The file as a TOML document, once it loads as an auth config (`AuthConfigInvalid`
    naming the field otherwise: a broken file is fixed by hand, not rewritten)."""
    if not path.exists():
        return {}
    load_auth_config(path)
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, doc: dict) -> None:
    """Write atomically (a reload never sees half a file) and durably, check it loads; a new
    file is owner-only, one that exists keeps its owner, group and mode (`files.keep_owner`)."""
    tmp = path.with_name(path.name + ".tmp")
    text = dumps(doc, path)
    try:
        write_private(tmp, text)
    except OSError as err:  # not this account's directory (sudo forgotten): one line, no change
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AuthConfigInvalid(path, cannot_write(tmp, err)) from None
    try:
        load_auth_config(tmp)
    except AuthConfigInvalid as err:
        tmp.unlink()
        raise AuthConfigInvalid(path, str(err).partition(": ")[2]) from None
    keep_owner(tmp, path, f"auth config {path}")
    durable.replace(tmp, path)  # a revocation survives a power loss


def _target(path: Path) -> Path:
    """The file `path` names, through symlinks (`/etc/tailor/auth.toml -> releases/...`): the
    new copy replaces it, not the link, which would leave the target (and whatever reads it,
    or puts the link back) on the old principals. Links that loop, and a directory that does
    not exist, are refused in one line."""
    try:
        target = Path(path).resolve()
    except RuntimeError:  # Python 3.11's "Symlink loop from ..."
        raise AuthConfigInvalid(path, "its symlinks loop (it never reaches a file): point "
                                      "it at the auth config file; nothing was changed") from None
    if not target.parent.is_dir():  # the lock on it said `[Errno 2] No such file or directory`
        raise AuthConfigInvalid(path, f"no directory {target.parent}: give --auth-config a file "
                                      "in a directory that exists (or make it first); nothing "
                                      "was changed")
    return target


def new_token() -> str:
    """A random token. It never starts with "-": one in 64 of `token_urlsafe`'s would, and a
    command line (`--token T`) would read it as an option."""
    while (token := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return token


def mint(path: Path, name: str, roles: list[str], token: str | None = None) -> str:
    """Give principal `name` with `roles` the token `token` (default: a `new_token`), replacing
    its previous one; returns the token, which is stored nowhere."""
    token = new_token() if token is None else token
    grant(path, name, roles, token, replace=True)
    return token


def grant(path: Path, name: str, roles: list[str], token: str, *,
          replace: bool) -> Principal | None:
    """Give principal `name` with `roles` the token `token`; returns the principal it replaced
    (None: a new one). One that exists is `PrincipalExists` unless `replace`: the command ran
    for a new service with a name already taken swapped that principal's token and roles
    without a word, cutting off whoever held its old token. Checked under the directory's lock,
    so two runs naming one new principal do not both pass. A caller that must report the
    change even when `durable.Unconfirmed` says the file was replaced but not synced reads the
    principal it replaced from that error's `replaced`."""
    path = _target(path)
    with directory_locked(path):  # another run's change between our read and write is kept
        doc = _read(path)
        old = doc.get("principals", {}).get(name)
        previous = None if old is None else Principal(name, frozenset(old.get("roles", ())))
        if previous is not None and not replace:
            raise PrincipalExists(path, previous, "token_sha256" in old)
        entry = {k: v for k, v in (old or {}).items() if k not in ("roles", "token_sha256")}
        doc.setdefault("principals", {})[name] = {"roles": roles,
                                                  "token_sha256": token_hash(token), **entry}
        try:
            _write(path, doc)
        except durable.Unconfirmed as err:
            err.replaced = previous
            raise
    return previous


def revoke(path: Path, name: str) -> bool:
    """Remove principal `name`; False if it was not there."""
    path = _target(path)
    with directory_locked(path):
        doc = _read(path)
        if doc.get("principals", {}).pop(name, None) is None:
            return False
        _write(path, doc)
    return True
