"""The server's secrets: one keyring per purpose, from the environment or a file, with rotation.

A keyring is a list of `kid:base64key` entries. The first entry signs; every entry verifies, so
a value signed before a rotation still verifies after it. Sources, first match wins (the format
and the lookup are `contract.keyring`'s, which training reads the `erasure` keyring with):

- the environment variable `TAILOR_SECRET_<NAME>` (entries separated by commas or newlines),
- the file `<secrets_dir>/<name>.keys` (one entry a line, `#` comments allowed). One that every
  user of the host may write is refused (anyone could put their own keys in); one every user may
  read is loaded with a warning (deployments that mount secrets 0444 in a container keep
  working; on a shared host, `chmod o-r`).

On a loopback host a missing keyring is generated into `secrets_dir` (development: `make
serve`); any other host refuses to start without it, naming what to provide. An optional
keyring (`OPTIONAL_KEYRINGS`) turns a feature on: loaded when present, never generated.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets as _random
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from contract.keyring import env_name, keyring_path, keyring_text, parse_keys

from .. import durable
from ..errors import FailedPrecondition
from .files import cannot_write, directory_locked, keep_owner, like_siblings, write_private
from .hosts import is_loopback
from .principals import writable_by_all

__all__ = ["KEYRINGS", "OPTIONAL_KEYRINGS", "Keyring", "MissingSecret", "Secrets"]

logger = logging.getLogger("tailor.security")

KEYRINGS = ("user-id", "audit", "unsubscribe", "encryption", "erasure", "suppression", "store-id")
"""Every keyring the server loads: keyed hashes of user ids in logs and audit lines, the audit
chain's MACs, unsubscribe-token signatures, the master key that encryption derives from, the
keyed hashes of erased users' ids in tombstones (which training needs too: a key of its own,
so training can match tombstones without being able to read log references), and keyed hashes
of suppressed addresses (`server.contact.addresses`; rotate it with every old key kept: entries
hashed under a dropped key are no longer found), and the key of the keyed hashes that stand for
user and event ids in store keys (`server.store.tokens`; never rotated: the store is keyed by
it)."""
OPTIONAL_KEYRINGS = ("sms-webhook", "delivery-webhook", "delivery-events")
"""Keyrings of features that are off without them: `sms-webhook`, the secret the SMS provider
signs inbound requests with (`server.http.sms`, signed as `server.http.signing` says; its key
bytes are the provider's secret, base64 in the entry; every key verifies, so a new provider
secret can be added before the old one is dropped); `delivery-webhook`, the secret outgoing SMS
and push webhook requests are signed with (`server.messages.webhook`; the first key signs, its
id is sent along); `delivery-events`, the secret bounce and complaint reports to
`/delivery/events` are signed with (`server.http.delivery_events`, the same scheme; every key
verifies)."""

KEY_BYTES = 32


class MissingSecret(FailedPrecondition):
    """A keyring found neither in the environment nor as a file. A relative secrets dir (the
    default `var/secrets`) is named with the directory it was looked up from: `audit verify`
    or `migrate` run from another directory than the servers' said only `write
    var/secrets/audit.keys`, which read as though the keyrings were gone."""

    def __init__(self, name: str, path: Path | None):
        if path is None:
            super().__init__(f"secret {name!r} is missing: set {env_name(name)} (secrets_dir is "
                             "none: every keyring comes from the environment, none is generated)")
            return
        super().__init__(f"secret {name!r} is missing: set {env_name(name)} or write {path}"
                         f"{_from_where(path)} (one 'kid:base64key' line per key, signing key "
                         "first). Development secrets are generated only when the server listens "
                         "on a loopback address")


def _from_where(path: Path) -> str:
    if Path(path).is_absolute():
        return ""
    try:
        cwd = str(Path.cwd())
    except OSError:  # removed since the process started in it: raised here, it hid this error
        cwd = "a working directory that no longer exists"
    return (f" (from {cwd}: a relative secrets dir; --secrets-dir or TAILOR_SECRETS_DIR "
            "names the servers')")


@dataclass(frozen=True)
class Keyring:
    """Keys of one purpose, newest first: `keys[0]` signs, all of them verify."""

    name: str
    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, name: str, text: str) -> Keyring:
        try:
            return cls(name, parse_keys(name, text))
        except ValueError as err:
            raise FailedPrecondition(str(err)) from None

    @classmethod
    def generate(cls, name: str, kid: str | None = None) -> Keyring:
        return cls(name, ((kid or _new_kid(), _random.token_bytes(KEY_BYTES)),))

    def text(self) -> str:
        return "".join(f"{kid}:{base64.b64encode(key).decode()}\n" for kid, key in self.keys)

    @property
    def kid(self) -> str:
        """The id of the signing key."""
        return self.keys[0][0]

    @property
    def key(self) -> bytes:
        """The signing key."""
        return self.keys[0][1]

    def key_of(self, kid: str) -> bytes | None:
        return next((key for k, key in self.keys if k == kid), None)

    def mac(self, message: bytes, kid: str | None = None) -> str:
        """Hex HMAC-SHA256 of `message` under the signing key (or key `kid`)."""
        key = self.key if kid is None else self.key_of(kid)
        if key is None:
            raise KeyError(f"secret {self.name!r} has no key {kid!r}")
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def sign(self, message: bytes) -> str:
        """`kid.hexmac` under the signing key."""
        return f"{self.kid}.{self.mac(message)}"

    def verify(self, message: bytes, signature: str) -> bool:
        """True when `signature` (from `sign`) is valid under any key of the ring."""
        kid, _, mac = signature.rpartition(".")
        if self.key_of(kid) is None:
            return False
        return hmac.compare_digest(self.mac(message, kid), mac)

    def rotated(self, kid: str | None = None, keep: int | None = None) -> Keyring:
        """A new signing key in front; the old keys stay for verifying (the newest `keep` of them)."""
        new = Keyring.generate(self.name, kid)
        old = self.keys if keep is None else self.keys[:keep]
        if new.kid in {k for k, _ in old}:
            raise FailedPrecondition(f"secret {self.name!r} already has a key {new.kid!r}")
        return Keyring(self.name, new.keys + old)


def _new_kid() -> str:
    return time.strftime("k%Y%m%dT%H%M%S", time.gmtime()) + "-" + _random.token_hex(2)


class Secrets:
    """Every keyring of the server, loaded once per process (`Secrets.load`)."""

    def __init__(self, rings: dict[str, Keyring], secrets_dir: Path | None = None):
        self._rings = rings
        self.secrets_dir = secrets_dir

    @classmethod
    def load(cls, secrets_dir: Path | None, *, generate: bool, names: tuple[str, ...] = KEYRINGS,
             environ: dict[str, str] | None = None, optional: tuple[str, ...] = (),
             development: bool = True) -> Secrets:
        """Read the keyrings `names`; with `generate`, write missing ones to `secrets_dir` first
        (logged as development keys unless `development` is False: `secrets init`, which
        makes a deployment's). The `optional` ones are read when present (`get`), never
        generated."""
        rings = {}
        for name in optional:
            text = _text(name, secrets_dir, environ)
            if text is not None:
                rings[name] = Keyring.parse(name, text)
        for name in names:
            path = keyring_path(name, secrets_dir)
            text = _text(name, secrets_dir, environ)
            if text is not None:
                rings[name] = Keyring.parse(name, text)
            elif generate and path is not None:
                rings[name] = _create(path, Keyring.generate(name), development)
            else:
                raise MissingSecret(name, path)
        return cls(rings, secrets_dir)

    @classmethod
    def for_server(cls, settings) -> Secrets:
        """The keyrings of a server with these `Settings`; generated only on a loopback host."""
        return cls.load(settings.secrets_dir, generate=is_loopback(settings.host),
                        optional=OPTIONAL_KEYRINGS)

    def __getitem__(self, name: str) -> Keyring:
        return self._rings[name]

    def get(self, name: str) -> Keyring | None:
        """An optional keyring, None when it was not provided."""
        return self._rings.get(name)

    def rotate(self, name: str, keep: int | None = None) -> Keyring:
        """Put a new signing key in front of `name`'s file keyring; returns the new ring. On
        `durable.Unconfirmed` (the file replaced, its directory not synced) the ring is this
        object's `name` all the same."""
        if self.secrets_dir is None:
            raise FailedPrecondition("no secrets_dir: rotate environment secrets where they are set")
        path = keyring_path(name, self.secrets_dir).resolve()  # through a symlink: the file
        with directory_locked(path):  # the file as it is now: a rotation meanwhile is kept
            old = _text(name, self.secrets_dir, {})
            ring = (self._rings[name] if old is None else Keyring.parse(name, old)).rotated(keep=keep)
            text = ring.text()
            if keep is None and old is not None:  # the new key in front of the file as it is:
                text = text.splitlines(keepends=True)[0] + old  # its notes stay
            try:
                _replace(path, text)
            except durable.Unconfirmed:
                self._rings[name] = ring  # the file holds it: what the caller reports
                raise
        self._rings[name] = ring
        return ring


def _text(name: str, secrets_dir: Path | None, environ: dict[str, str] | None) -> str | None:
    """`keyring_text`, its ValueError (a file that is not text) as a FailedPrecondition; a file
    checked for who may change or read it (`_check_mode`)."""
    try:
        text = keyring_text(name, secrets_dir, environ)
    except ValueError as err:
        raise FailedPrecondition(str(err)) from None
    env = os.environ if environ is None else environ
    if text is not None and not env.get(env_name(name), "").strip():
        _check_mode(name, keyring_path(name, secrets_dir))
    return text


def _check_mode(name: str, path: Path) -> None:
    """Refuse a keyring file every user may write or replace (`writable_by_all`); warn about
    one every user may read."""
    unsafe = writable_by_all(path, "put in keys of their own")
    if unsafe:
        raise FailedPrecondition(f"secret {name!r} in {path}: {unsafe}")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IROTH:
        logger.warning("secret %r in %s: every user may read it (mode %04o); chmod o-r unless "
                       "it is a container's own mount", name, path, mode)


def _create(path: Path, ring: Keyring, development: bool = True) -> Keyring:
    """Write `ring` to `path` unless another process did first; returns what the file holds."""
    durable.make_dirs(path.parent, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private(tmp, ring.text())
    try:
        like_siblings(tmp, "*.keys")  # `sudo secrets init`: the server's account's, not root's
        durable.fsync_path(tmp)  # as `durable.replace`, but linked: never over another's key
        os.link(tmp, path)  # atomic create-if-absent: concurrent workers agree on one key
        durable.confirm(path.parent)  # the name on disk before anything is sealed under it
        if development:
            logger.warning("generated a development secret %r in %s (never use it in "
                           "production)", ring.name, path)
        else:
            logger.info("generated the secret %r in %s", ring.name, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return Keyring.parse(ring.name, path.read_text())


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # 0600 from its creation on, so not `durable.write_file`
        write_private(tmp, text)
    except OSError as err:  # not this account's directory (sudo forgotten): one line, no change
        raise FailedPrecondition(f"keyring {path}: {cannot_write(tmp, err)}") from None
    keep_owner(tmp, path, f"keyring {path}")
    durable.replace(tmp, path)
