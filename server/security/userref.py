"""`user_ref(user_id)`: what stands in for a user id wherever one is logged or audited.

A keyed hash (HMAC-SHA256 under the `user-id` secret, 16 hex characters): stable across the
workers of one deployment, so log lines about one user can be joined, and not reversible without
the secret (a plain hash of an email address is). Until `use_key` runs (at server start), a
random per-process key stands in: references are then unstable, never raw. A server binds its
own key in its context (`bind`, `TailorServer`), as it does its `store-id` key
(`store.tokens.bound_context`): two servers in one process each write their own references.

An audit line's `target` is the same hash of the key the call is about, labelled by what the key
is (`target_ref`): `u:` a user id, `c:` a campaign id (`CampaignKey`), `a:` a suppression
address (`AddressKey`). Until this label an address and a campaign read `u:` too, as a user.
"""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import os
from collections.abc import Iterable

__all__ = ["REF_CHARS", "use_key", "bind", "user_ref", "target_ref", "target_refs", "CampaignKey",
           "AddressKey"]

REF_CHARS = 16

_key = os.urandom(32)


class CampaignKey(str):
    """A campaign id as an audit target (a str: compared, bounded and passed on as one)."""

    label = "c"


class AddressKey(str):
    """A suppression address as an audit target: `<email|phone>:` and the address as the list
    normalizes it (`security.interceptor.address_target`)."""

    label = "a"


_bound: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("tailor_user_id_key",
                                                                    default=None)


def use_key(key: bytes) -> None:
    """Install the signing key of the `user-id` keyring for this process."""
    global _key
    _key = key


def bind(key: bytes) -> None:
    """In the current context, references are under `key` (a server's `user-id` key; run in
    its `tokens.bound_context`), the installed key outside."""
    _bound.set(key)


def _digest(key: str, secret: bytes | None = None) -> str:
    secret = secret if secret is not None else _bound.get() or _key
    digest = hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return digest[:REF_CHARS]


def user_ref(user_id: str) -> str:
    """`u:` and 16 hex characters of HMAC-SHA256(user-id secret, user_id)."""
    return "u:" + _digest(user_id)


def target_ref(target: str) -> str:
    """An audit line's `target` for `target`: its label (`a:` an `AddressKey`, `c:` a
    `CampaignKey`, else `u:`, a user id) and the 16 hex characters `user_ref` gives the same
    text, so a line written before the labels (every target `u:`) still matches on them."""
    return f"{getattr(target, 'label', 'u')}:{_digest(target)}"


def target_refs(target: str, secrets: Iterable[bytes]) -> list[str]:
    """`target_ref` of `target` under each of `secrets` (the keys of the `user-id` keyring, the
    current one first): a line written before a `secrets rotate user-id` names its target under
    the key then current, so finding every line about one key takes each."""
    label = getattr(target, "label", "u")
    return list(dict.fromkeys(f"{label}:{_digest(target, secret)}" for secret in secrets))
