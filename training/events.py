"""Interaction and catalog containers shared by every training step.

Ids are strings at the edges (files, bundle) and dense int32 codes inside: ``Interactions.user``
indexes ``Interactions.user_ids`` and ``Interactions.item`` indexes ``Interactions.item_ids``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from contract.events import DEFAULT_EVENT_WEIGHTS, EVENT_TYPES, VALUED_TYPES

__all__ = ["EVENTS", "DEFAULT_EVENT_WEIGHTS", "Interactions", "Catalog", "event_weights"]

logger = logging.getLogger("tailor.training.events")

EVENTS = EVENT_TYPES
"""Known event names (the contract's, shared with the server); ``Interactions.event`` holds
indices into this tuple. Weights: `contract.events.DEFAULT_EVENT_WEIGHTS`."""


@dataclass
class Interactions:
    """Columnar interaction log with dense user and item codes.

    Attributes
    ----------
    user_ids, item_ids : ndarray of str
        Code -> external id. ``item_ids`` is the whole item universe (catalog first).
    user, item : ndarray of int32
        Codes per row.
    ts : ndarray of int64
        Unix seconds per row.
    event : ndarray of int8
        Index into `EVENTS` per row.
    value : ndarray of float32
        Order amount, rating, or 0.
    channel : ndarray of int8, optional
        `kernels.context.CHANNELS` code per row (-1: unknown), when the file has a ``channel``
        column (the ranker's context features, ``--context-features``); else None.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    event: np.ndarray
    value: np.ndarray
    channel: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def subset(self, mask: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or index array; id tables are kept."""
        return replace(self, user=self.user[mask], item=self.item[mask], ts=self.ts[mask],
                       event=self.event[mask], value=self.value[mask],
                       channel=None if self.channel is None else self.channel[mask])


@dataclass
class Catalog:
    """Item metadata aligned with ``Interactions.item_ids`` (row i describes item code i)."""

    item_ids: np.ndarray
    titles: np.ndarray
    urls: np.ndarray
    category: np.ndarray
    category_names: np.ndarray
    price: np.ndarray
    images: np.ndarray | None = None
    """Image URLs ("" where unknown); None for catalogs read without them."""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])


def event_weights(inter: Interactions, weights: dict[str, float] | None = None) -> np.ndarray:
    """Per-row implicit weight: the event's weight, times the row's value for ``rating`` rows
    (`contract.events.VALUED_TYPES`).

    Parameters
    ----------
    inter : Interactions
    weights : dict, optional
        Event name -> weight; missing names fall back to `DEFAULT_EVENT_WEIGHTS`.

    Returns
    -------
    ndarray of float32, shape (n_rows,)
    """
    table = {**DEFAULT_EVENT_WEIGHTS, **(weights or {})}
    lut = np.array([table[name] for name in EVENTS], dtype=np.float32)
    w = lut[inter.event]
    valued = np.isin(inter.event, [EVENTS.index(name) for name in VALUED_TYPES])
    w[valued] *= inter.value[valued]
    return w
