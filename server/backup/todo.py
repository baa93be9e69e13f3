"""What a restore tells the operator is left to do (`erase_again`) and what its re-erasure
could not reach (`left_behind`): counts and times, never a user."""
from __future__ import annotations

import time

__all__ = ["erase_again", "left_behind"]

_NO_KEYRING = "(no 'encryption' keyring in --secrets-dir)"
_WITH_THE_KEYRING = ("with the 'encryption' keyring in --secrets-dir (it did not open them: not "
                     "the keyring their data keys were wrapped under, such as another "
                     "deployment's or one whose older keys were dropped since the backup)")
"""Why sealed records were not read, without a keyring and with one given (`_unread`,
`left_behind`): a second restore with the same keyring would read none of them either."""


def erase_again(unlinked: int | None, replaced: bool, manifest: dict,
                keyring_given: bool = False) -> str | None:
    """What the operator must do about what the restore could not erase again, from the counts
    of `manifest` (the backup's, with the re-erasure's): first, the sealed records it could not
    read without the `encryption` keyring, or with the one given (`keyring_given`), which
    lacked their key (`_unread`: running the restore again undoes any DeleteProfile made
    before it), then the DeleteProfile replay from the store snapshot for the users whose
    records or impressions are back (`_replay`); None when there is nothing to do."""
    todo = [item for item in (_unread(manifest, keyring_given),
                              _replay(unlinked, replaced, manifest)) if item]
    return ". Then: ".join(todo) or None


def _replay(unlinked: int | None, replaced: bool, manifest: dict) -> str | None:
    """The DeleteProfile replay for the users erased after the store snapshot of the backup
    `manifest` describes whose records are back with it: the `unlinked` ones, whose tombstones
    were carried over but found none of their records (`erase_carried`), or all of them when
    `unlinked` is None (not known: no store replaced, or one that could not be read,
    `replaced`), and those whose tombstones found none of their impressions
    (`impressions_not_linked`: DeleteProfile deletes them too); None when there are none."""
    whys = []
    if unlinked:
        whys.append(f"{unlinked} user(s) erased after the backup have their records back (their "
                    "tombstones were carried over, but the restore could not find their records: "
                    "written before tombstones kept what finds them, under an 'erasure' key it "
                    "was not given (--secrets-dir) or was given another key under the same id, "
                    "or into a backup whose keys hold raw ids)")
    elif unlinked is None and replaced:
        whys.append("the replaced store could not be read, so users erased after the backup are "
                    "not known")
    elif unlinked is None:
        whys.append("no store was replaced, so users erased after the backup are not known here "
                    "(restore over the live data dir with --force to carry their tombstones)")
    if unlinked is not None and manifest.get("impressions_not_linked"):
        whys.append(f"{manifest['impressions_not_linked']} tombstone(s) found none of their "
                    "users' impressions (written before tombstones kept what finds them, or "
                    "under an 'erasure' key not given), which stay until impression retention "
                    "drops them")
    if not whys:
        return None
    return (f"{'; and '.join(whys)}: before serving, call DeleteProfile again for every user "
            f"whose erasure was requested since {_replay_since(manifest)}; a user with nothing "
            "back answers records_deleted 0")


def _unread(manifest: dict, keyring_given: bool) -> str | None:
    """What to do about the re-erased users' sealed records the restore could not read: their
    pending decisions (`pending_not_corrected`) and send records (`send_states_unread`); None
    when it read them all. Run again with a keyring that opens them: not the one given
    (`keyring_given`), which would read none of them again."""
    parts = [f"{manifest[name]} {what}" for name, what in (
        ("pending_not_corrected", "pending decision(s)"), ("send_states_unread", "send record(s)"))
        if manifest.get(name)]
    if not parts:
        return None
    why, then = ((_WITH_THE_KEYRING, "if that keyring is not the one their data keys were "
                  "wrapped under when the backup was taken, run this restore again with --force "
                  "and a --secrets-dir whose 'encryption' keyring holds the keys of that time")
                 if keyring_given else
                 (_NO_KEYRING, "run this restore again with --force and a --secrets-dir that "
                  "holds the 'encryption' keyring"))
    return (f"{' and '.join(parts)} of the users erased again could not be read {why}, so their "
            "campaigns' pending counters still count them and their SendCampaign jobs do not "
            f"count them suppressed 'erased': before serving, {then}")


def left_behind(manifest: dict, keyring_given: bool = False) -> list[str]:
    """What a restore's re-erasure could not reach, a line each for the operator (counts only,
    no user; each also in the JSON): impressions of tombstones that keep nothing that finds
    them (`impressions_not_linked`), and the re-erased users' records it could not open
    without the `encryption` keyring, or with the one given (`keyring_given`)
    (`pending_not_corrected`, `send_states_unread`)."""
    why = _WITH_THE_KEYRING if keyring_given else _NO_KEYRING
    lines = []
    if manifest.get("impressions_not_linked"):
        lines.append(f"{manifest['impressions_not_linked']} tombstone(s) found none of their "
                     "users' impressions (written before tombstones kept what finds them, or "
                     "under an 'erasure' key not given): those stay until impression retention "
                     "drops them, unless DeleteProfile is called for those users again")
    if manifest.get("pending_not_corrected"):
        lines.append(f"{manifest['pending_not_corrected']} pending decision(s) of re-erased "
                     f"users could not be read {why}: their campaigns' pending counters still "
                     "count them")
    if manifest.get("send_states_unread"):
        lines.append(f"{manifest['send_states_unread']} send record(s) of re-erased users "
                     f"could not be read {why}: their SendCampaign jobs do not count them "
                     "suppressed 'erased'")
    return lines


def _replay_since(manifest: dict) -> str:
    """From when erasure requests are to be replayed: the store snapshot's time (UTC, floored
    to the second). A backup an older Tailor wrote recorded only `created`, taken after its
    store and bundles were copied: users erased while they were are in it too."""
    if "store_snapshot" in manifest:
        return f"{_utc(manifest['store_snapshot'])} (the backup's store snapshot)"
    return (f"a little before {_utc(manifest['created'])} (the end of the backup: the Tailor "
            "that wrote it did not record when its store snapshot was taken; take the time its "
            "backup command started)")


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
