"""Profile errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition, ResourceExhausted

__all__ = ["ErasedSince", "ProfileAttributesFull"]


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
