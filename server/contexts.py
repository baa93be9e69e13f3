"""A server's work in its own context: the keys a `TailorServer` binds in it (its `store-id`
key, `store.tokens.bound_context`; its `user-id` key, `security.userref.bind`) are what its
store keys and its log and audit references are computed under. asyncio tasks and
`asyncio.to_thread` take the caller's context; executor calls and threads do not, so they are
given it (`carried`). Imports nothing of ours: any layer may use it."""
from __future__ import annotations

import contextvars
import functools

__all__ = ["carried"]


def carried(fn, *args, context: contextvars.Context | None = None):
    """`fn(*args)` as a callable that runs in a copy of `context` (default: the current one)
    wherever it is called (an executor's thread, a thread's target): what it computes for a
    server is under its keys."""
    context = contextvars.copy_context() if context is None else context.copy()
    return functools.partial(context.run, fn, *args)
