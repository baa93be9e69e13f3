"""Errors of the security package."""
from __future__ import annotations

from ..errors import FailedPrecondition

__all__ = ["AuthConfigInvalid"]


class AuthConfigInvalid(FailedPrecondition):
    """The auth config file cannot be used; the server refuses to start (or keeps the old one
    on a reload)."""

    def __init__(self, path, problem: str):
        super().__init__(f"auth config {path}: {problem}")
