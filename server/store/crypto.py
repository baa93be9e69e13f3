"""What a store needs to encrypt at rest: the master keys, the `store-id` key, the switch.

`StoreCrypto` travels to every process that opens the store: the server builds it from its
`Secrets`; a writer child rebuilds it from `spec()` (the secrets directory, never key bytes:
the child reads the same files or inherits the same environment).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contract.keyring import keyring_text, parse_keys

from ..errors import FailedPrecondition
from ..security.secrets import Secrets
from . import tokens

__all__ = ["StoreCrypto", "MASTER_RING", "STORE_ID_RING", "check_secrets_outside"]

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
