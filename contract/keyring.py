"""The keyring format, shared by the server (every keyring) and training (the `erasure` one).

A keyring is a list of `kid:base64key` entries, newest first (the first signs, every one
verifies). Sources, first match wins: the environment variable `TAILOR_SECRET_<NAME>` (entries
separated by commas or newlines), then the file `<secrets_dir>/<name>.keys` (one entry a line,
`#` comments allowed, to the end of the line: a note may hold commas). The server's
`server.security.secrets` adds generation, rotation and signing on top; training reads the
keys with `read_keys` alone.
"""
from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ENVIRONMENT_ONLY", "MIN_KEY_BYTES", "env_name", "environment_only", "keyring_path",
           "keyring_text", "parse_keys", "read_keys"]

MIN_KEY_BYTES = 16

ENVIRONMENT_ONLY = "none"
"""The secrets dir that is no directory (TAILOR_SECRETS_DIR=none, `secrets_dir = "none"`, a
`--secrets-dir none` of the server's commands and training's): every keyring from its
`TAILOR_SECRET_<NAME>` variable, none read from a file or generated. Neither TOML nor a variable
can say None. The word in any case (`environment_only`): a directory of that name is `./none`."""


def environment_only(value) -> bool:
    """Whether a secrets dir's `value` (a flag's, a variable's, a config file's) is the word
    `none` (`ENVIRONMENT_ONLY`), in any case: before, `--secrets-dir NONE` (or `None`) was a
    directory ./NONE, where a server on loopback generated development keys. A directory of
    that name is `./NONE`."""
    return isinstance(value, str) and value.lower() == ENVIRONMENT_ONLY

Keys = tuple[tuple[str, bytes], ...]


def env_name(name: str) -> str:
    """The environment variable of keyring `name` (``erasure`` -> ``TAILOR_SECRET_ERASURE``)."""
    return "TAILOR_SECRET_" + name.upper().replace("-", "_")


def keyring_path(name: str, secrets_dir: Path | None) -> Path | None:
    """The file of keyring `name` under `secrets_dir` (None without one)."""
    return Path(secrets_dir) / f"{name}.keys" if secrets_dir else None


def keyring_text(name: str, secrets_dir: Path | None,
                 environ: Mapping[str, str] | None = None) -> str | None:
    """The text of keyring `name`: its (non-blank) environment variable, else its file, else
    None; ValueError naming the file when it is not text (raw key bytes) or cannot be read (a
    directory, as a secret mounted one level too deep is; a file of another account)."""
    env = os.environ if environ is None else environ
    if env.get(env_name(name), "").strip():
        return env[env_name(name)]
    path = keyring_path(name, secrets_dir)
    if path is None or not path.exists():
        return None
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"secret {name!r} in {path}: cannot read it ({err.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"secret {name!r} in {path}: not text: expected 'kid:base64key' lines "
                         "(a raw key is written as `kid:` and its base64)") from None


def parse_keys(name: str, text: str) -> Keys:
    """(kid, key) entries of a keyring's text; ValueError names the keyring and the entry."""
    keys = []
    for line, raw in enumerate(text.splitlines(), 1):  # a `#` note first: it may hold commas
        for n, part in enumerate(raw.split("#", 1)[0].split(","), 1):
            entry = part.strip()
            if not entry:
                continue
            kid, sep, b64 = entry.partition(":")
            try:
                key = base64.b64decode(b64.strip(), validate=True) if sep else b""
            except ValueError:
                key = b""
            if not kid.strip() or len(key) < MIN_KEY_BYTES:
                raise ValueError(f"secret {name!r}, line {line}, entry {n}: expected "
                                 f"'kid:base64key' with at least {MIN_KEY_BYTES} key bytes")
            keys.append((kid.strip(), key))
    if not keys:
        raise ValueError(f"secret {name!r} holds no key")
    if len({kid for kid, _ in keys}) != len(keys):
        raise ValueError(f"secret {name!r} names a key id twice")
    return tuple(keys)


def read_keys(name: str, secrets_dir: Path | None,
              environ: Mapping[str, str] | None = None) -> Keys:
    """The keys of keyring `name`; ValueError when it is missing (naming what to provide) or
    malformed."""
    text = keyring_text(name, secrets_dir, environ)
    if text is None:
        path = keyring_path(name, secrets_dir)
        where = f" or write {path}" if path is not None else ""
        raise ValueError(f"secret {name!r} is missing: set {env_name(name)}{where}")
    return parse_keys(name, text)
