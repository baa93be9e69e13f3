"""Errors of the batching package."""
from __future__ import annotations

__all__ = ["BatcherClosed"]


class BatcherClosed(RuntimeError):
    """A call reached a batcher (or a runner) that is shut down."""

    def __init__(self, name: str):
        super().__init__(f"the {name} batcher is shut down")
