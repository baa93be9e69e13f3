"""Impression errors: each names what went wrong; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition

__all__ = ["ImpressionDamaged"]


class ImpressionDamaged(FailedPrecondition):
    """One of the impressions an access export's page would list does not decode
    (`records.decode`): the export may leave nothing out, so it refuses (naming the request
    the impression answered, no user)."""

    def __init__(self, request_id: str):
        super().__init__(f"one of the user's impressions (the answer to request {request_id!r}) "
                         "is damaged (does not decode); restore the store from a backup, or "
                         "erase the user (docs/operations.md, \"Damaged impressions\")")
