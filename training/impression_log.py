"""The impression log as training reads it: ``impressions.jsonl`` of ``training export
--impressions`` (or of ``training demo-data --impressions-per-user``), one JSON object per answer
(`training.export.IMPRESSION_FIELDS`, docs/impressions.md).

The outcomes of each shown item (``clicked``, ``carted``, ``purchased``) are the server's feedback
join (`server.impressions.join`: by request id, else the attribution window), applied when the
events were tracked and exported with the log. Training reads them as they are and does not join
again: there is one join, the server's, so the labels training learns from are the ones
GetModelStats counts.

An impression becomes one *request*: its user (a code of the events' users; -1 when the export
names the user only by hash, or the user has no rows), the request's channel code
(`kernels.context.CHANNELS`; -1 for any other channel), its unix time, and its shown items that
the catalog knows (in position order) with a 0/1 label: any joined outcome.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.context import channel_code

__all__ = ["ImpressionRows", "read_impressions", "user_cutoffs"]


@dataclass(frozen=True)
class ImpressionRows:
    """Requests (one per impression) and their shown items as CSR.

    Attributes
    ----------
    user, channel, ts : ndarray of int64, shape (R,)
        User code (-1: unknown), channel code (-1: unknown), unix seconds.
    indptr : ndarray of int64, shape (R + 1,)
    item : ndarray of int64, shape (N,)
        Item rows of the catalog, position order within a request.
    positive : ndarray of bool, shape (N,)
        The item was clicked, carted or purchased (the server's join).
    """

    user: np.ndarray
    channel: np.ndarray
    ts: np.ndarray
    indptr: np.ndarray
    item: np.ndarray
    positive: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def request_of(self) -> np.ndarray:
        """Request index of each shown item, int64 [N]."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def subset(self, mask: np.ndarray) -> ImpressionRows:
        """Requests selected by a boolean mask over the requests."""
        keep = np.repeat(mask, np.diff(self.indptr))
        sizes = np.diff(self.indptr)[mask]
        return ImpressionRows(self.user[mask], self.channel[mask], self.ts[mask],
                              np.r_[0, np.cumsum(sizes)].astype(np.int64), self.item[keep],
                              self.positive[keep])


def _positive(shown: dict) -> bool:
    return bool(shown.get("clicked") or shown.get("carted") or shown.get("purchased"))


def read_impressions(path: str | Path, user_ids, item_ids) -> ImpressionRows:
    """The requests of ``path`` with users coded by ``user_ids`` and items by ``item_ids`` (the
    events' id tables: `training.events.Interactions`); items not in ``item_ids`` are skipped.

    Raises
    ------
    ValueError
        A line that is not an impression object (naming the line).
    """
    users = {str(u): i for i, u in enumerate(np.asarray(user_ids).tolist())}
    items = {str(v): i for i, v in enumerate(np.asarray(item_ids).tolist())}
    user, channel, ts, sizes, item, positive = [], [], [], [], [], []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                shown = sorted(row["items"], key=lambda s: s["position"])
                known = [(items[s["item_id"]], _positive(s)) for s in shown if s["item_id"] in items]
                user.append(users.get(row["user_id"], -1) if row["user_id"] else -1)
                channel.append(channel_code(row["channel"]))
                ts.append(int(row["timestamp"]))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{n}: not an impression ({err!r})") from None
            sizes.append(len(known))
            item.extend(k[0] for k in known)
            positive.extend(k[1] for k in known)
    return ImpressionRows(np.asarray(user, np.int64), np.asarray(channel, np.int64),
                          np.asarray(ts, np.int64), np.r_[0, np.cumsum(sizes)].astype(np.int64),
                          np.asarray(item, np.int64), np.asarray(positive, bool))


def user_cutoffs(rows, mask: np.ndarray) -> np.ndarray:
    """Per user code of ``rows`` (`Interactions`), the earliest time of its rows in ``mask``
    (a temporal split's later part); users without such rows get int64 max."""
    out = np.full(rows.n_users, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, rows.user[mask], rows.ts[mask])
    return out
