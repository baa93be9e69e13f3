"""Profile errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import ResourceExhausted

__all__ = ["ProfileAttributesFull"]


class ProfileAttributesFull(ResourceExhausted):
    def __init__(self, what: str, held: int, most: int, limit: str):
        super().__init__(f"the profile would hold {held} {what} of attributes, at most {most} "
                         f"(limits.{limit}); remove some (an empty value) first")
