"""Profile errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition, ResourceExhausted

__all__ = ["ErasedSince", "PROFILE_DAMAGED", "ProfileAttributesFull", "ProfileDamaged"]

PROFILE_DAMAGED = "profile_damaged"
"""The reason of a decision suppressed, or an event rejected, for its user's damaged profile
record (`damage`; here, where the writer processes may read it without the metrics)."""


class ErasedSince(FailedPrecondition):
    """A change dated at or before its user's erasure (a retried or replayed call): storing it
    would bring the erased profile back."""

    def __init__(self, what: str):
        super().__init__(f"the user was erased after this {what}'s timestamp (DeleteProfile); it "
                         "is not stored: send it with a later timestamp, or none (now)")


class ProfileAttributesFull(ResourceExhausted):
    def __init__(self, what: str, held: int, most: int, limit: str):
        super().__init__(f"the profile would hold {held} {what} of attributes, at most {most} "
                         f"(limits.{limit}); remove some (an empty value) first")


class ProfileDamaged(FailedPrecondition):
    """A user's profile record does not open (sealed) or decode (plain): `records` names which
    (`damage.STATE`, `damage.META`); the message names no user (the caller's request does).
    Raised by a read of a batch, it carries the batch as read (`read`: each damaged user's
    row blanked, as without a profile) and the damaged users' positions (`damaged`), so a
    caller serving many users can go on without them (and report them: `found`, (position,
    record) each, `damage.report_found`)."""

    def __init__(self, records: str, read: list | None = None, damaged: tuple[int, ...] = (),
                 found: tuple[tuple[int, str], ...] = ()):
        super().__init__(f"the user's profile record ({records}) is damaged: it does not open "
                         "or decode; restore the store from a backup, or erase the user "
                         "(DeleteProfile) (docs/operations.md, \"Damaged profile records\")")
        self.read, self.damaged, self.found = read, damaged, found
