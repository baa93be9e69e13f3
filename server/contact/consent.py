"""Consent: may a user be contacted on a channel for a purpose? One function, over the stored
profile meta (`meta["consent"][channel] = {opted_in, source, timestamp}`).

Callers use `consent_reason` only: the richer consent format (per purpose, with history)
replaces this module's body behind the same signature.
"""
from __future__ import annotations

from collections.abc import Mapping

__all__ = ["consent_reason", "NO_CONSENT", "TRANSACTIONAL", "MARKETING", "PURPOSES", "NEEDS"]

NO_CONSENT = "no_consent"
MARKETING, TRANSACTIONAL = "marketing", "transactional"
PURPOSES = (MARKETING, TRANSACTIONAL)
NEEDS = ("opt_in", "opt_out", "none")
"""What a channel's default asks: an explicit opt-in, no opt-out, or nothing."""


def consent_reason(meta: Mapping | None, channel: str, purpose: str,
                   defaults: Mapping[str, str]) -> str | None:
    """`NO_CONSENT` when `channel` may not carry a message of `purpose` to this user, else None.

    Parameters
    ----------
    meta
        The user's profile meta record (None: no profile, so no consent given).
    channel, purpose
        Where and why the campaign contacts; transactional messages need no marketing consent.
    defaults
        Settings `consent_defaults`: per channel "opt_in", "opt_out" or "none" (a channel not
        listed needs nothing).
    """
    if purpose == TRANSACTIONAL:
        return None
    need = defaults.get(channel, "none")
    if need == "none":
        return None
    given = (meta or {}).get("consent", {}).get(channel)
    if given is None:
        return NO_CONSENT if need == "opt_in" else None
    return None if given.get("opted_in") else NO_CONSENT
