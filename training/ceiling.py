"""The demo world's ceiling: recommendations from the true view probabilities.

The demo world (`training.demo`) draws each view independently from a user's fixed tastes: no
sequence, no drift. The best any recommender can do on its hold-out is to rank each user's unseen
items by the probability that the world's next view picks them. `view_probabilities` estimates
it by drawing ``n_samples`` views per user with the world's own sampler (`demo._pick_items`,
with its exploration), so the ceiling is measured, not modelled. Email-featured items come from
the same sampler without exploration, and clicks, carts and purchases follow views of the same
item, so the ranking of view probabilities is the (near-)optimal ranking of later items.
"""
from __future__ import annotations

import numpy as np

from training.demo import DemoConfig, World, _pick_items

__all__ = ["view_probabilities", "oracle_recommendations"]


def view_probabilities(world: World, cfg: DemoConfig, users: dict, who: np.ndarray,
                       n_samples: int = 2000, seed: int = 1, chunk: int = 200) -> np.ndarray:
    """Estimated probability [len(who), n_items] that a view of user ``who[i]`` picks each item.

    Parameters
    ----------
    users : dict
        The world's users (``mix``, ``taste``, ``price_sens``), indexed by ``who``.
    n_samples : int
        Views drawn per user (standard error of a probability p: sqrt(p / n_samples)).
    """
    rng = np.random.default_rng(seed)
    counts = np.zeros((who.shape[0], world.category.shape[0]), np.float64)
    for start in range(0, n_samples, chunk):
        take = min(chunk, n_samples - start)
        rep = np.repeat(np.arange(who.shape[0]), take)
        item = _pick_items(rng, world, cfg, users, who[rep], explore=0.1)
        np.add.at(counts, (rep, item), 1.0)
    return counts / n_samples


def oracle_recommendations(prob: np.ndarray, seen: tuple, users: np.ndarray,
                           k: int = 10) -> np.ndarray:
    """Top ``k`` items by ``prob`` [U, n_items] (item codes) per user code ``users``, every item
    of the user's ``seen`` CSR filtered out (ties broken by item code)."""
    prob = prob.copy()
    indptr, items = seen
    for i, u in enumerate(users):
        prob[i, items[indptr[u]:indptr[u + 1]]] = -1.0
    return np.argsort(-prob, axis=1, kind="stable")[:, :k]
