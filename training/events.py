"""Interaction and catalog containers shared by every training step.

Ids are strings at the edges (files, bundle) and dense int32 codes inside: ``Interactions.user``
indexes ``Interactions.user_ids`` and ``Interactions.item`` indexes ``Interactions.item_ids``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["EVENTS", "DEFAULT_EVENT_WEIGHTS", "Interactions", "Catalog", "event_weights"]

logger = logging.getLogger("tailor.training.events")

EVENTS = (
    "view", "click", "add_to_cart", "purchase",
    "email_sent", "email_open", "email_click", "rating",
)
"""Known event names; ``Interactions.event`` holds indices into this tuple."""

DEFAULT_EVENT_WEIGHTS = {
    "view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0,
    "email_sent": 0.0, "email_open": 0.5, "email_click": 2.0, "rating": 1.0,
}
"""Implicit-feedback weight per event; a ``rating`` row weighs its rating value times ``rating``."""


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
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    event: np.ndarray
    value: np.ndarray

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
                       event=self.event[mask], value=self.value[mask])


@dataclass
class Catalog:
    """Item metadata aligned with ``Interactions.item_ids`` (row i describes item code i)."""

    item_ids: np.ndarray
    titles: np.ndarray
    urls: np.ndarray
    category: np.ndarray
    category_names: np.ndarray
    price: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])


def event_weights(inter: Interactions, weights: dict[str, float] | None = None) -> np.ndarray:
    """Per-row implicit weight: the event's weight, or the rating value for ``rating`` rows.

    Parameters
    ----------
    inter : Interactions
    weights : dict, optional
        Event name -> weight; missing names fall back to `DEFAULT_EVENT_WEIGHTS`, unknown to 0.

    Returns
    -------
    ndarray of float32, shape (n_rows,)
    """
    table = {**DEFAULT_EVENT_WEIGHTS, **(weights or {})}
    lut = np.array([table.get(name, 0.0) for name in EVENTS], dtype=np.float32)
    w = lut[inter.event]
    rating = inter.event == EVENTS.index("rating")
    w[rating] = inter.value[rating] * table.get("rating", 1.0)
    return w
