"""Consent per channel and purpose: the stored record, its bounded history, and the one check.

A profile meta record (layout 3 of the `profile_meta` kind, `server.store.layouts`) keeps::

    "consent":         {channel: {purpose: {"opted_in", "source", "timestamp"}}}
    "consent_history": [{"channel", "purpose", "opted_in", "source", "timestamp"}, ...]

`consent` is the current state of each channel and purpose (the latest change by timestamp; an
opt-out whenever it arrives over an opt-in; a withdrawal by other means than a STOP over a
STOP's opt-out, dated the later of the two, until an opt-in lifts the withdrawal:
`record_consent`);
`consent_history` every change in the order it arrived, oldest first, at most
`Limits.consent_history` of them. Layout 1 kept `consent: {channel: {"opted_in", ...}}`, the
marketing consent alone; `consent_reason` still reads it (a record passed in before migration).

Purposes: `marketing` needs consent as the channel's default says (`Settings.consent_defaults`:
`opt_in` = only after an opt-in, `opt_out` = unless opted out, `none` = not checked; but on
email and sms, whose messages carry an opt-out (a one-click link, STOP), `none` is `opt_out`:
an opt-out the server answered "you will receive no more" must stop them, `need_of`);
`transactional` (receipts, password resets) needs no marketing consent, and is refused only
where the user opted out of transactional messages on that channel explicitly.

Sources: a change's `source` says where it came from, as its writer names it. The server's own
SMS STOP handling writes its own (`STOP_SOURCES`: a reply's `sms reply STOP`, a carrier's
`sms carrier STOP (21610)`, `server.messages.stops`, and the opt-out of the `unsubscribe` event
a 21610 records, `STOP_EVENT_SOURCE`, marked so by the event itself: `validation.STOP_MARK`)
and matches on them later: a START reopens what they closed and nothing the user or operator
withdrew by other means, whatever the changes' times (`closed_by_stop`). An `unsubscribe`
event a client tracks (the user unsubscribed in its preference centre) writes `EVENT_SOURCE`,
a withdrawal a START never reopens. No client may write any of these (SetConsent refuses them:
`reserved_source`), or an opt-out it recorded would read as one a START may reopen or as the
user's tracked unsubscribe. Layout 2 wrote `unsubscribe event` for both kinds: its step to
layout 3 gives the 21610's source to one dated as a carrier STOP in the same history (the
two share the 21610's time), and any other reads as the client's, a START leaving it closed
(`store.layouts._meta_stop_events`, docs/messages.md).
"""
from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PURPOSES", "MARKETING", "TRANSACTIONAL", "NO_CONSENT", "OPT_OUT_CHANNELS",
           "need_of", "consent_reason", "consent_entry", "reopens", "opted_in_since", "record_consent",
           "current_consents", "REPLY_SOURCE", "CARRIER_SOURCE", "STOP_SOURCES", "by_stop",
           "reserved_source", "closed_by_stop", "EVENT_SOURCE", "STOP_EVENT_SOURCE",
           "SHARED_SOURCE", "STOP_SHARED_SOURCE", "RESERVED_SOURCES", "event_source", "reopenable"]

MARKETING, TRANSACTIONAL = "marketing", "transactional"
PURPOSES = (MARKETING, TRANSACTIONAL)
NO_CONSENT = "no_consent"
OPT_OUT_CHANNELS = frozenset({"email", "sms"})
"""Channels whose messages carry an opt-out (one-click link, STOP reply): one is always read."""
REPLY_SOURCE = "sms reply "
"""The start of an SMS reply's consent source (`sms reply STOP`, `sms reply START`)."""
CARRIER_SOURCE = "sms carrier STOP (21610)"
"""The consent source of a provider's refusal saying the carrier blocks the number."""
EVENT_SOURCE = "unsubscribe event"
"""The consent source of the opt-out of an `unsubscribe` event a client tracks
(`unsubscribe event (shared address)` at the other profiles there: `messages.optout`): the
user's own withdrawal, which a START never reopens."""
STOP_EVENT_SOURCE = f"{CARRIER_SOURCE} event"
"""The consent source of the opt-out of the `unsubscribe` event the server records for a
carrier's 21610 (`messages.reports.opt_out_event`, marked `validation.STOP_MARK`; with
` (shared address)` at the other profiles there), after its STOP: a START reopens it."""
SHARED_SOURCE = f"{EVENT_SOURCE} (shared address)"
"""The consent source of the other profiles' opt-out after a client's unsubscribe event
(`messages.optout.SharedOptOut`). Here, not in messages/, so the store's layout step that
reads it (`store.layouts._meta_stop_events`) depends on contact/ alone, as messages/ depends
on the store and not the other way."""
STOP_SHARED_SOURCE = f"{STOP_EVENT_SOURCE} (shared address)"
"""The consent source of the other profiles' opt-out after the server's own unsubscribe event
(a 21610's): a STOP's (`by_stop`), which a START reopens."""
STOP_SOURCES = (REPLY_SOURCE, CARRIER_SOURCE)
"""The starts of the sources only the server's STOP handling writes (`by_stop`)."""
RESERVED_SOURCES = (*STOP_SOURCES, EVENT_SOURCE)
"""The starts of the sources only the server writes (`reserved_source`): its STOP handling's
and a tracked `unsubscribe` event's."""


def event_source(marked: bool, shared: bool = False) -> str:
    """The consent source of an `unsubscribe` event's opt-out: `STOP_EVENT_SOURCE` when the
    event carries the server's STOP mark (`validation.STOP_MARK`: a 21610's), else the
    client's `EVENT_SOURCE`; with `shared`, their ` (shared address)` forms, of the other
    profiles at the address (`messages.optout.SharedOptOut`)."""
    if shared:
        return STOP_SHARED_SOURCE if marked else SHARED_SOURCE
    return STOP_EVENT_SOURCE if marked else EVENT_SOURCE


def by_stop(source: str) -> bool:
    """Whether a change of `source` came from the server's STOP handling (an SMS reply, a
    carrier's 21610 and the `unsubscribe` event it records): an opt-out a START may reopen,
    where one of any other source (SetConsent, a one-click link, an `unsubscribe` event a
    client tracked) is the user's or operator's withdrawal, which it never may."""
    return str(source).startswith(STOP_SOURCES)


def reserved_source(source: str) -> str | None:
    """The start of `RESERVED_SOURCES` that `source` has (None: none), so a client's change
    may not name it: its opt-out would read as a STOP's, which a START reopens, or as a
    tracked unsubscribe's."""
    return next((s for s in RESERVED_SOURCES if source.startswith(s)), None)


def need_of(defaults: Mapping[str, str], channel: str) -> str:
    """What marketing on `channel` needs: its `consent_defaults` entry ("none" when not listed),
    except that `none` on a channel of `OPT_OUT_CHANNELS` is `opt_out`. With `none` there, a
    one-click unsubscribe or a STOP was recorded and answered "no more marketing", and never
    read: the next campaign went all the same."""
    need = defaults.get(channel, "none")
    return "opt_out" if need == "none" and channel in OPT_OUT_CHANNELS else need


def consent_reason(meta: Mapping | None, channel: str, purpose: str,
                   defaults: Mapping[str, str]) -> str | None:
    """`NO_CONSENT` when `channel` may not carry a message of `purpose` to the user whose
    profile meta record is `meta`, else None.

    Parameters
    ----------
    meta
        The user's profile meta record (None: no profile, so no consent given).
    channel, purpose
        Where and why the campaign contacts. Marketing needs what the channel's default asks;
        transactional needs no marketing consent and stops only at an explicit transactional
        opt-out of that channel.
    defaults
        Settings `consent_defaults`: per channel "opt_in", "opt_out" or "none" (not checked;
        a channel not listed needs nothing; on email and sms as "opt_out": `need_of`).

    Costs a few dict lookups (the decision path calls it per user and channel).
    """
    if purpose == TRANSACTIONAL:
        return NO_CONSENT if closed(meta, channel, TRANSACTIONAL) else None
    need = need_of(defaults, channel)
    if need == "none":
        return None
    entry = consent_entry(meta, channel, MARKETING)
    if entry is None:
        return NO_CONSENT if need == "opt_in" else None
    return None if entry["opted_in"] else NO_CONSENT


def reopens(meta: Mapping | None, channel: str, defaults: Mapping[str, str]) -> bool:
    """Whether a reply such as START may opt the user back in to marketing on `channel`: it
    undoes what a STOP closed (`closed_by_stop`), and gives no consent the user had not given.
    True only when the current state is such an opt-out and, where the channel needs an opt-in
    (`need_of`), the history holds one (a "Reply YES to confirm" on a receipt, or a START from
    a user who never agreed, recorded a first opt-in before: the marketing began):
    `reopenable`, which the START's write transaction checks again."""
    return reopenable(meta, channel, MARKETING, need_of(defaults, channel) == "opt_in")


def reopenable(meta: Mapping | None, channel: str, purpose: str, needs_opt_in: bool) -> bool:
    """Whether a START may opt (channel, purpose) back in: it is closed by the STOP handling
    alone (`closed_by_stop`) and, with `needs_opt_in` (marketing where the channel's default is
    `opt_in`: `reopens`), the history holds an opt-in of it. One rule for the read that picks
    the profiles and for the write transaction that checks them again
    (`Profiles.set_consents` `stopped_only`, `needs_opt_in`): a change committed in between
    (the opt-in pushed out of the bounded history) counts."""
    if not closed_by_stop(meta, channel, purpose):
        return False  # nothing to undo, or withdrawn by other means
    return not needs_opt_in or any(
        h.get("channel") == channel and h.get("purpose", MARKETING) == purpose
        and h.get("opted_in") for h in meta.get("consent_history", ()))


def closed_by_stop(meta: Mapping | None, channel: str, purpose: str) -> bool:
    """Whether (channel, purpose) is closed by the server's STOP handling alone (`by_stop`):
    what a START reopens. False when the current state is an opt-in or another source's
    opt-out, or when the history holds an opt-out of another source (SetConsent, a one-click
    link: the user's or operator's withdrawal) that no opt-in lifted
    since (`_withdrawn`): a state stored before `record_consent` kept such an opt-out current
    over a STOP's (a STOP after it, or it dated before the STOP) reads as the STOP's."""
    entry = consent_entry(meta, channel, purpose)
    return entry is not None and not entry.get("opted_in") and \
        by_stop(entry.get("source", "")) and not _withdrawn(meta, channel, purpose)


def _withdrawn(meta: Mapping, channel: str, purpose: str) -> bool:
    """Whether the history of (channel, purpose) holds an opt-out that is not a STOP's and that
    no opt-in lifted: one arriving after it and dated no earlier (an opt-out is honoured
    whenever it arrives; an opt-in dated before it does not undo it: `record_consent`)."""
    pending = None  # the latest time of the opt-outs by other means not lifted
    for h in meta.get("consent_history", ()):
        if h.get("channel") != channel or h.get("purpose", MARKETING) != purpose:
            continue
        ts = float(h.get("timestamp", 0.0))
        if not h.get("opted_in") and not by_stop(h.get("source", "")):
            pending = ts if pending is None else max(pending, ts)
        elif h.get("opted_in") and pending is not None and ts >= pending:
            pending = None
    return pending is not None


def closed(meta: Mapping | None, channel: str, purpose: str) -> bool:
    """Whether the user opted out of (channel, purpose), by any source."""
    entry = consent_entry(meta, channel, purpose)
    return entry is not None and not entry.get("opted_in")


def opted_in_since(meta: Mapping | None, channel: str, purpose: str, ts: float) -> bool:
    """Whether the current state of (channel, purpose) is an opt-in dated after `ts` (a
    choice the user made since a change dated `ts`, which an older opt-out must not undo)."""
    entry = consent_entry(meta, channel, purpose)
    return entry is not None and bool(entry.get("opted_in")) \
        and float(entry.get("timestamp", 0.0)) > ts


def consent_entry(meta: Mapping | None, channel: str, purpose: str) -> Mapping | None:
    """The stored state of (channel, purpose), reading layout 1 (marketing only) too."""
    if not meta:
        return None
    by_purpose = meta.get("consent", {}).get(channel)
    if by_purpose is None:
        return None
    if "opted_in" in by_purpose:  # layout 1: the channel's marketing consent
        return by_purpose if purpose == MARKETING else None
    return by_purpose.get(purpose)


def record_consent(meta: dict, channel: str, purpose: str, opted_in: bool, source: str,
                   timestamp: float, keep: int) -> None:
    """Add a change to `meta` (layout 2) in place: appended to the history (the oldest beyond
    `keep` dropped) unless the current state already says it (same choice and source), or the
    purpose's last entry does and it stays out of the current state again; made the current
    state as `_current` says. Changes may arrive out of order (replayed webhooks, clocks that
    disagree): an opt-out is honoured whenever it arrives, but never replaces a later opt-out,
    so a stale opt-in never re-opens a channel the user closed later; and an opt-out by other
    means than a STOP holds over a STOP's."""
    change = {"opted_in": bool(opted_in), "source": source, "timestamp": float(timestamp)}
    current = meta.setdefault("consent", {}).setdefault(channel, {})
    held = current.get(purpose)
    history = meta.setdefault("consent_history", [])
    last = next((h for h in reversed(history) if h.get("channel") == channel
                 and h.get("purpose", MARKETING) == purpose), None)
    now = change if held is None else _current(held, change)
    said = (change["opted_in"], source)
    if not _says(held, said) and (_says(now, said) or not _says(last, said)):
        # A change the current state already says (a one-click link POSTed again, a second
        # STOP), or the last change of the purpose that stays out of the current state again
        # (a second STOP after a withdrawal by other means, which stays current), adds no
        # entry: repeats would push the older changes (the signup opt-in, its time and
        # source) out of the history. One that becomes the current state is a change: a
        # re-subscribe repeating a stale opt-in the withdrawal kept out was left out, and a
        # STOP after it then read as over the withdrawal (`_withdrawn`), never reopened.
        history.append({"channel": channel, "purpose": purpose, **change})
        del history[:max(len(history) - keep, 0)]
    current[purpose] = _stop_under(meta, channel, purpose, now, change) or now


def _stop_under(meta: Mapping, channel: str, purpose: str, held: dict,
                change: dict) -> dict | None:
    """The STOP's opt-out that `held`, a withdrawal by other means, holds over (`_current`:
    dated the STOP's time), once `change`, an opt-in dated between the two, lifted the
    withdrawal (`_withdrawn`: it arrived after it, dated no earlier); None when it did not.
    The state is then the STOP's alone, as it is when the opt-in arrives before the STOP, so
    a START reopens it: a withdrawal, a STOP and then an opt-in dated between them (a
    re-subscribe in the app arriving late) stayed the withdrawal's, never reopened. Read only
    from the history: with the withdrawal's entry or the STOP's gone from it, None."""
    if not change["opted_in"] or held["opted_in"] or by_stop(held.get("source", "")) \
            or change["timestamp"] >= held["timestamp"]:
        return None
    mine = [h for h in meta["consent_history"]
            if h.get("channel") == channel and h.get("purpose", MARKETING) == purpose]
    seen = any(not h.get("opted_in") and h.get("source") == held.get("source") for h in mine)
    stops = [h for h in mine if not h.get("opted_in") and by_stop(h.get("source", ""))]
    stop = max(stops, key=lambda h: float(h.get("timestamp", 0.0)), default=None)  # the latest
    if not seen or stop is None or _withdrawn(meta, channel, purpose):
        return None
    return {"opted_in": False, "source": stop["source"], "timestamp": held["timestamp"]}


def _says(state: Mapping | None, said: tuple[bool, str]) -> bool:
    """Whether `state` (a current state or history entry; None: none) is (opted_in, source)."""
    return state is not None and (bool(state.get("opted_in")), state.get("source")) == said


def _current(held: dict, change: dict) -> dict:
    """The current state once `change` arrives over `held`: the later of the two, or an opt-out
    over an opt-in whenever it arrives. Of two opt-outs, one the STOP handling's (`by_stop`),
    the other holds, whatever their times, dated the later: a START reopens a STOP's only
    (`closed_by_stop`), and a withdrawal through SetConsent dated before a STOP (or a STOP
    after one) left the STOP's current, reopened by the next START."""
    if not held["opted_in"] and not change["opted_in"] and \
            by_stop(held.get("source", "")) != by_stop(change["source"]):
        withdrawal = change if by_stop(held.get("source", "")) else held
        return {**withdrawal, "timestamp": max(held["timestamp"], change["timestamp"])}
    if held["timestamp"] <= change["timestamp"] or (not change["opted_in"] and held["opted_in"]):
        return change
    return held


def current_consents(meta: Mapping) -> list[dict]:
    """[{channel, purpose, opted_in, source, timestamp}] of the current states, in channel and
    purpose order."""
    return [{"channel": c, "purpose": p, **entry}
            for c, by_purpose in sorted(meta.get("consent", {}).items())
            for p, entry in sorted(by_purpose.items())]
