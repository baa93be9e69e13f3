"""`user_ref(user_id)`: what stands in for a user id wherever one is logged or audited.

A keyed hash (HMAC-SHA256 under the `user-id` secret, 16 hex characters): stable across the
workers of one deployment, so log lines about one user can be joined, and not reversible without
the secret (a plain hash of an email address is). Until `use_key` runs (at server start), a
random per-process key stands in: references are then unstable, never raw.
"""
from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["REF_CHARS", "use_key", "user_ref"]

REF_CHARS = 16

_key = os.urandom(32)


def use_key(key: bytes) -> None:
    """Install the signing key of the `user-id` keyring for this process."""
    global _key
    _key = key


def user_ref(user_id: str) -> str:
    """`u:` and 16 hex characters of HMAC-SHA256(user-id secret, user_id)."""
    digest = hmac.new(_key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "u:" + digest[:REF_CHARS]
