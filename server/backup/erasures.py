"""The erasures a restore carries from the store it replaces into the restored copy (the
tombstones the backup lacks or holds older), and the users they name erased again from the
copy (`store.reerase`) and from its bundles (`models.scrub.scrub_restored`), with the counts
of the restore's JSON."""
from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from pathlib import Path

from contract.erasure import digest

from ..models.scrub import scrub_restored
from ..store.backup import add_missing, read_prefix, read_value
from ..store.keys import ERASURE_CHECK_PREFIX, TOMBSTONE_COUNT, TOMBSTONE_PREFIX, tombstone_parts
from ..store.reerase import COUNTS, found_by, impressions_found, key_check, reerase, tokens_found
from ..store.rekey import KEY_VERSION, KEY_VERSION_KEY

__all__ = ["carry_erasures", "carry_suppressions", "erase_carried", "keys_checked"]


def carry_erasures(live: Path, restored: Path) -> list[tuple[bytes, bytes]] | None:
    """Copy the tombstones of the store being replaced (`live`) that the `restored` copy lacks,
    or holds with an earlier erasure (a user erased before the backup, back, and erased again
    after it): users erased after the backup, whose records are back with it. Their tombstones
    keep what they decide (old bundle rows masked, training filtered; docs/privacy.md) and the
    hash that finds the records (`erase_carried`). The tombstones carried (key, value); None
    when it is not known: no live store (a restore into another data dir) or one that cannot
    be read (then nothing is carried: a damaged store is what restores are for)."""
    if not (live / "data.mdb").exists():
        return None
    tombstones = read_prefix(live, "meta", TOMBSTONE_PREFIX)
    if tombstones is None:
        return None
    carried = set(add_missing(restored, "meta", tombstones, counter=TOMBSTONE_COUNT,
                              newer=_erased_later))
    return [(key, value) for key, value in tombstones if key in carried]


def carry_suppressions(live: Path, restored: Path) -> int:
    """Copy the suppression list's entries of the store being replaced (`live`) that the
    `restored` copy lacks, or holds marketing-only where the live one blocks every purpose:
    the keep-outs the erasures after the backup wrote (`contact.keepout`: the re-erasure
    writes none, it reads neither the users' consent nor the `suppression` keyring), and the
    bounces, complaints and AddSuppression entries listed since. Keyed hashes and no user:
    more suppression, never less (an entry taken off since, by RemoveSuppression or an
    opt-in's lift, stays as the backup holds it). How many were put (0: none, or the live
    store cannot be read, as `carry_erasures` finds first)."""
    entries = read_prefix(live, "suppression", b"") if (live / "data.mdb").exists() else None
    if not entries:
        return 0
    return len(add_missing(restored, "suppression", entries, newer=_blocks_more))


def _blocks_more(stored: bytes, live: bytes) -> bool:
    """Whether the live entry blocks every purpose where the copy's blocks marketing only."""
    try:
        return bool(json.loads(stored).get("purpose")) and not json.loads(live).get("purpose")
    except (ValueError, AttributeError):
        return False


def keys_checked(live: Path, restored: Path, ring: Sequence[tuple[str, bytes]],
                  carried: list | None) -> list[tuple[str, bytes]]:
    """The keys of the `erasure` keyring `ring` that the store being replaced (`live`) does not
    know as other keys under the same id (`reerase.key_check`, stored with the first tombstone
    under each key id): with another deployment's secrets, whose key ids can match, the
    carried tombstones found nobody and the restore said there was nothing left to do. Their
    tombstones then count as not linked, for the operator. The checks go with the carried
    tombstones into the `restored` copy."""
    if carried is None:
        return list(ring)
    checks = read_prefix(live, "meta", ERASURE_CHECK_PREFIX) or []
    add_missing(restored, "meta", checks)
    known = {key[len(ERASURE_CHECK_PREFIX):].decode(): bytes(value) for key, value in checks}
    return [(kid, key) for kid, key in ring if known.get(kid, key_check(key)) == key_check(key)]


def _erased_later(stored: bytes, live: bytes) -> bool:
    """Whether the live store's tombstone is of a later erasure than the backup's (False for
    a value that is not a tombstone record)."""
    try:
        return json.loads(live)["at"] > json.loads(stored)["at"]
    except (ValueError, TypeError, KeyError):
        return False


def erase_carried(staging: Path, carried: list[tuple[bytes, bytes]] | None,
                   ring: Sequence[tuple[str, bytes]],
                   master: Sequence[tuple[str, bytes]] = ()) -> dict:
    """Erase again, in the restored copy under `staging`, the users of the tombstones
    `carried` over, found among the copy's tokens by the hash each tombstone keeps under its
    key of the `erasure` keyring `ring` (layout tombstone 2): their store records
    (`store.reerase`) and their rows in the restored bundles, which name users by the same
    tokens (`scrub_restored`: the erasure that queued them for the scrub is not in the
    backup); the manifest's counts. A tombstone
    written before (`found_by` null or absent), under a key `ring` lacks, or carried into a
    copy whose keys still hold raw ids (key version 1, a backup of an old Tailor) cannot find
    its user's records: counted in `erasures_not_linked`, for the operator (`erase_again`).
    Their plaintext send records and dead letters (found by the id's hash, the tombstone's
    key: `_named_by`) and their impressions (`impressions_by`) need no token: those are looked
    for in such a copy too."""
    if carried is None:
        return {"erasures_after_backup": None, "erased_again": 0, "records_erased_again": 0,
                "bundle_rows_erased_again": 0, "sends_erased_again": 0,
                "send_jobs_erased_again": 0, "impressions_erased_again": 0,
                "pending_corrected": 0, "pending_not_corrected": 0, "send_states_unread": 0,
                "erasures_not_linked": None, "impressions_not_linked": None}
    store_dir, kids = staging / "store", {kid for kid, _ in ring}
    raw_ids = read_value(store_dir, "meta", KEY_VERSION_KEY) != b"%d" % KEY_VERSION
    wanted = {} if raw_ids else _tokens_wanted(carried, kids)  # raw ids: re-keyed at first open
    tokens = tokens_found(store_dir, wanted, ring) if wanted else []
    shown, linked = _impressions_wanted(carried, kids)
    removed = reerase(store_dir, tokens, _named_by(carried, ring),
                      impressions_found(store_dir, shown, ring), master)
    rows = scrub_restored(staging / "bundles", _erasure_times(tokens, wanted, ring))
    return {"erasures_after_backup": len(carried), "erased_again": len(tokens),
            "records_erased_again": sum(n for name, n in removed.items() if name not in COUNTS),
            "bundle_rows_erased_again": rows,
            "sends_erased_again": removed["sends"], "send_jobs_erased_again": removed["send_jobs"],
            "impressions_erased_again": removed["impressions"],
            "pending_corrected": removed["pending_corrected"],
            "pending_not_corrected": removed["pending_unread"],
            "send_states_unread": removed["sends_unread"],
            "erasures_not_linked": len(carried) - sum(map(len, wanted.values())),
            "impressions_not_linked": len(carried) - linked}


def _tokens_wanted(carried: list[tuple[bytes, bytes]],
                   kids: set[str]) -> dict[str, dict[str, float]]:
    """{kid: {the `found_by` hash of each `carried` tombstone under key `kid`: its erasure
    time}}: those written before layout 2 of `tombstone` (`found_by` null), or under a key id
    the restore's ring lacks, find none of their user's records."""
    wanted: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for key, value in carried:
        if (hashed := _found_by_of(value)) is not None and (kid := tombstone_parts(key)[0]) in kids:
            wanted[kid][hashed] = _erased_time(value)
    return wanted


def _impressions_wanted(carried: list[tuple[bytes, bytes]],
                        kids: set[str]) -> tuple[dict[str, set[str]], int]:
    """({kid: the `impressions_by` hashes of the `carried` tombstones under key `kid`}, how
    many tombstones gave some): one written before layout 3 of `tombstone` (`impressions_by`
    null), or under a key id the restore's ring lacks, finds none of its user's impressions."""
    shown: dict[str, set[str]] = collections.defaultdict(set)
    linked = 0
    for key, value in carried:
        found = _record_of(value).get("impressions_by")
        if isinstance(found, list) and (kid := tombstone_parts(key)[0]) in kids:
            shown[kid].update(h for h in found if isinstance(h, str))
            linked += 1
    return shown, linked


def _record_of(tombstone: bytes) -> dict:
    """A tombstone's value as a dict ({} when it is not a JSON object)."""
    try:
        record = json.loads(tombstone)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _named_by(carried: list[tuple[bytes, bytes]], ring: Sequence[tuple[str, bytes]]):
    """Whether a user id is one the `carried` tombstones name (their key: the id's HMAC under
    key `kid` of the `erasure` keyring `ring`): how the restore finds the send records and
    dead letters of a store without encryption at rest, which hold the id in their JSON
    rather than start with the user's token. A key that is not `tombstone␟<kid>␟<digest>`
    names nobody."""
    digests = collections.defaultdict(set)
    for key, _ in carried:
        try:
            kid, hashed = tombstone_parts(key)
        except ValueError:
            continue
        digests[kid].add(hashed)
    keys = [(key, digests[kid]) for kid, key in ring if digests.get(kid)]
    return lambda user_id: any(digest(key, user_id) in found for key, found in keys)


def _erased_time(tombstone: bytes) -> float:
    """When a tombstone's user was erased (its `at`; 0.0 when it does not say)."""
    try:
        return float(json.loads(tombstone)["at"])
    except (ValueError, TypeError, KeyError):
        return 0.0


def _erasure_times(tokens: list[bytes], wanted: dict[str, dict[str, float]],
                   ring: Sequence[tuple[str, bytes]]) -> dict[bytes, float]:
    """{token: erasure time} of the `tokens` found by the hashes `wanted` ({kid: {hash: at}}):
    the scrub cuts a bundle's row only when the erasure is after the bundle's data cutoff."""
    times = {}
    for token in tokens:
        times[token] = max(wanted[kid].get(found_by(key, token), 0.0)
                           for kid, key in ring if kid in wanted)
    return times


def _found_by_of(tombstone: bytes) -> str | None:
    """The hash of its user's token a tombstone's value keeps; None: none (or not a record)."""
    hashed = _record_of(tombstone).get("found_by")
    return hashed if isinstance(hashed, str) and hashed else None
