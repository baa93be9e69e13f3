"""Errors of the store's encryption (all refuse an open or a read: FAILED_PRECONDITION)."""
from __future__ import annotations

from ..errors import FailedPrecondition

__all__ = ["StoreKeyMissing", "StoreKeyMismatch", "StoreEncrypted"]


class StoreKeyMissing(FailedPrecondition):
    """A data key is wrapped under a master key the `encryption` keyring no longer holds."""

    def __init__(self, kid: str):
        super().__init__(f"data keys are wrapped under master key {kid!r}, which the "
                         "'encryption' keyring does not hold: restore it, or finish "
                         "`python -m server rotate-key` before dropping it")


class StoreKeyMismatch(FailedPrecondition):
    """The store was keyed under another `store-id` key."""

    def __init__(self, path):
        super().__init__(f"store at {path} was written under another 'store-id' key: its "
                         "records cannot be found with this one (restore the deployment's key)")


class StoreEncrypted(FailedPrecondition):
    """An encrypted store opened without encryption (settings or secrets)."""

    def __init__(self, path):
        super().__init__(f"store at {path} is encrypted at rest: open it with encryption on "
                         "and the 'encryption' keyring")
