"""What a store needs to encrypt at rest: the master keys, the `store-id` key, the switch.

`StoreCrypto` travels to every process that opens the store: the server builds it from its
`Secrets`; a writer child rebuilds it from `spec()` (the secrets directory, never key bytes:
the child reads the same files or inherits the same environment).

A store is stamped with its `store-id` key's check value at its first open (`rekey`). The
default keyring directory, `var/secrets`, is relative to the working directory: a server
started from another directory over the same data dir found no keyrings there, generated fresh
development ones (loopback), and then refused the store, leaving the new keyring behind and
not saying where it had looked. `secrets_for_store` refuses such a start before any key is
generated (`refuse_keyless_store`), and both refusals name the keyring file and how its
directory was chosen (`store_id_origin`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import lmdb

from contract.keyring import env_name, keyring_path, keyring_text, parse_keys

from ..errors import FailedPrecondition
from ..security.secrets import Secrets
from . import tokens
from .errors import StoreKeyringMissing, StoreUnreadable
from .lock import check_restore_finished

__all__ = ["StoreCrypto", "MASTER_RING", "STORE_ID_RING", "check_secrets_outside",
           "secrets_for_store", "refuse_keyless_store", "store_id_origin", "store_id_stamped"]

MASTER_RING = "encryption"
STORE_ID_RING = "store-id"


@dataclass(frozen=True)
class StoreCrypto:
    master: tuple[tuple[str, bytes], ...]
    """The `encryption` keyring, newest first: data keys are wrapped under keys derived from it."""
    store_id_key: bytes
    """The `store-id` key: user and event ids in store keys are HMACs under it (`tokens`)."""
    encrypt: bool = True
    """Seal per-user records (off: keyed hashes only; for benchmarks of the cost)."""
    secrets_dir: Path | None = None
    cache_size: int = 65536
    """Unwrapped data keys kept per process (`DataKeys`)."""

    @classmethod
    def from_secrets(cls, secrets: Secrets, encrypt: bool = True,
                     cache_size: int = 65536) -> StoreCrypto:
        return cls(secrets[MASTER_RING].keys, secrets[STORE_ID_RING].key, encrypt,
                   secrets.secrets_dir, cache_size)

    @classmethod
    def from_spec(cls, spec: dict) -> StoreCrypto:
        """The crypto of another process's `spec()` (a writer child)."""
        secrets_dir = Path(spec["secrets_dir"]) if spec.get("secrets_dir") else None
        secrets = Secrets.load(secrets_dir, generate=False, names=(MASTER_RING, STORE_ID_RING))
        return cls.from_secrets(secrets, spec["encrypt"], spec["cache_size"])

    def spec(self) -> dict:
        return {"secrets_dir": str(self.secrets_dir) if self.secrets_dir else None,
                "encrypt": self.encrypt, "cache_size": self.cache_size}

    def install(self) -> None:
        """Key this process's store keys with the `store-id` key."""
        tokens.use_key(self.store_id_key)

    def reload_master(self) -> tuple[tuple[str, bytes], ...]:
        """The `encryption` keyring as its source holds it now (after `rotate-key`)."""
        text = keyring_text(MASTER_RING, self.secrets_dir)
        return parse_keys(MASTER_RING, text) if text is not None else self.master


def check_secrets_outside(secrets_dir: Path | None, data_dir: Path) -> None:
    """Refuse a secrets directory inside the data dir: a copy of the data dir would then carry
    the keys that decrypt it."""
    if secrets_dir is None:
        return
    inner, outer = Path(secrets_dir).resolve(), Path(data_dir).resolve()
    if inner == outer or outer in inner.parents:
        raise FailedPrecondition(f"secrets_dir {secrets_dir} is inside the data dir {data_dir}: "
                                 "move the keyrings out of it (copies of the data dir must not "
                                 "carry the keys)")


def secrets_for_store(settings) -> Secrets:
    """`Secrets.for_server(settings)`, unless the store under `settings.store_dir` was stamped
    under a `store-id` key none is provided for (`refuse_keyless_store`), or a restore into
    `settings.data_dir` did not finish (`lock.check_restore_finished`: its store, maybe not
    swapped in yet, is stamped under the deployment's key): refused before a keyring is
    generated. The servers load their secrets here (`workers.serve`, `app`), before they take
    the data dir's lock, which refuses an unfinished restore too, but only after."""
    check_restore_finished(settings.data_dir)
    refuse_keyless_store(settings)
    return Secrets.for_server(settings)


def refuse_keyless_store(settings, environ: Mapping[str, str] | None = None) -> None:
    """`StoreKeyringMissing` when no `store-id` keyring is provided (neither its variable nor
    its file) and the store under `settings.store_dir` is stamped under one: a key generated
    now would never match it. An empty data dir (a first start), or a store from before the
    stamp (its re-key stamps it under the key generated), is left to `Secrets.for_server`."""
    try:
        if keyring_text(STORE_ID_RING, settings.secrets_dir, environ) is not None:
            return
    except ValueError:  # a keyring file that cannot be read: `Secrets.load` names it
        return
    if store_id_stamped(settings.store_dir):
        raise StoreKeyringMissing(settings.store_dir, store_id_origin(settings, environ))


def store_id_stamped(store_dir: Path) -> bool:
    """Whether the store under `store_dir` holds a `store-id` key's check value
    (`rekey.KEY_CHECK_KEY`), read in a read-only transaction without opening it as a `Store`
    (no key, no migration; safe while servers hold it open). False when there is no store or
    it cannot be read so: the open that follows says why."""
    from .lmdb_store import open_env  # it imports this module
    from .rekey import KEY_CHECK_KEY
    if not (Path(store_dir) / "data.mdb").exists():
        return False
    try:
        env = open_env(store_dir, readonly=True, lock=True, readahead=False)
    except StoreUnreadable:
        return False
    try:
        with env.begin(db=env.open_db(b"meta", create=False)) as txn:
            return txn.get(KEY_CHECK_KEY) is not None
    except lmdb.Error:  # no meta table (NotFoundError) or another read failure
        return False
    finally:
        env.close()


def store_id_origin(settings, environ: Mapping[str, str] | None = None) -> str:
    """Where the `store-id` key is read from, and how that was chosen, for a refusal to name:
    its variable, or its file (absolute) in `secrets_dir`, the default (`var/secrets`, relative
    to the working directory), `TAILOR_SECRETS_DIR`'s, or one set by `--secrets-dir` or the
    config file (Settings do not keep which of the two)."""
    env = os.environ if environ is None else environ
    variable = env_name(STORE_ID_RING)
    if env.get(variable, "").strip():
        return variable
    secrets_dir = settings.secrets_dir
    if secrets_dir is None:
        return f"{variable} (secrets_dir none: the environment only)"
    path = Path(keyring_path(STORE_ID_RING, secrets_dir)).absolute()
    if "secrets_dir" not in settings.model_fields_set:
        how = f"the default secrets_dir {secrets_dir}, relative to the working directory {Path.cwd()}"
    elif env.get("TAILOR_SECRETS_DIR") and Path(env["TAILOR_SECRETS_DIR"]) == Path(secrets_dir):
        how = "secrets_dir from TAILOR_SECRETS_DIR"
    else:
        how = "secrets_dir from --secrets-dir or the config file"
    return f"{path} ({how})"
