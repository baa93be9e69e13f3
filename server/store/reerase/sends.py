"""Re-erasure of dead letters and of the recipients' records of unfinished send jobs, whose
jobs are settled as DeleteProfile settles them."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable

from .. import keys
from ..damaged import plain_user
from ..opener import Opener
from ..table import Table
from ..tokens import TOKEN_CHARS

__all__ = ["erase_sends"]


def erase_sends(txn, sends: Table, tokens: set[bytes], named: Callable[[str], bool] | None,
           opened: Opener) -> Counter:
    """The dead letters and unfinished send jobs' recipient records of the users erased
    again: sealed ones start with one of `tokens` (`Store.seal_for_user`); plaintext ones (no
    encryption at rest) are JSON whose `user` is an id `named` accepts, or do not decode
    (damaged: `_whose`). A recipient's job is
    settled as DeleteProfile settles it (`messages.sends.settle_erased`: a deferred
    message's job deleted, an unsettled recipient counted suppressed `erased`), before its
    record goes; a sealed record's state is read through the `encryption` keyring
    (`Opener`); without it, it is not counted (`sends_unread`), as a running job does not
    count a record it cannot open (nor a damaged one: its state does not read)."""
    from ...messages.sends import Recipient, send_id_of, settle_erased  # messages imports the store
    removed: Counter = Counter()
    for prefix in (keys.DEAD_LETTER_PREFIX, keys.SEND_USER_PREFIX):
        found = []
        for key, stored in sends.items(txn, prefix):
            if not key.startswith(prefix):
                break
            if _whose(bytes(stored), tokens, named):
                found.append((bytes(key), bytes(stored)))
        for key, stored in found:
            if prefix == keys.SEND_USER_PREFIX:
                r = _recipient(Recipient, opened.for_user(txn, key, stored))
                removed["sends_unread"] += r is None
                removed["send_jobs"] += settle_erased(txn, sends, send_id_of(key), r)
            removed["sends"] += sends.delete(txn, key)
    return removed


def _whose(stored: bytes, tokens: set[bytes], named: Callable[[str], bool] | None) -> bool:
    """Whether a send record or dead letter is of a user erased again: sealed, it starts with
    their token; plain, its `user` is an id `named` accepts, or it does not decode to a record
    naming a user (damaged: its user-id text may be theirs, hit; nobody can read it), as
    DeleteProfile deletes such a record it meets (`messages.owned.stray`); one damaged
    elsewhere whose text still names a user (`plain_user`) is that user's."""
    if _HEX.fullmatch(stored[:TOKEN_CHARS]):
        return stored[:TOKEN_CHARS] in tokens
    if named is None:
        return False
    try:
        user = json.loads(stored)["user"]
    except (ValueError, TypeError, KeyError):
        user = plain_user(stored)
        return user is None or named(user)
    return not isinstance(user, str) or named(user)


def _recipient(cls, raw: bytes | None):
    """The recipient of an opened record (`cls`: `Recipient`); None: not opened, or damaged
    (its state unknown: not counted)."""
    try:
        return None if raw is None else cls.decode(0, raw)
    except (ValueError, TypeError, KeyError):
        return None


_HEX = re.compile(rb"[0-9a-f]{%d}" % TOKEN_CHARS)
"""A sealed record's start, its user's token; a plain one starts `{"`."""
