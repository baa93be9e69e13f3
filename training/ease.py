"""EASE (Steck 2019), the closed-form item-item baseline of the served backtest.

For a binary users x items matrix X: P = (X^T X + lambda I)^-1, B = -P / diag(P) with a zero
diagonal; a user's scores are x_u B. Every item the user interacted with is filtered out of the
answer (full seen-item filtering). Memory and time are those of one dense n_items x n_items
inverse: `fit_bytes` (34 bytes per item pair at the peak, measured: 5,000 items 0.85 GB, 20,000
items 13.6 GB, 1M items 34 TB), so this baseline is for catalogs up to ~20k items;
`check_fits` refuses a catalog whose fit would not fit in the memory this process may take
(physical, or less: `ulimit -v`, the cgroup's limit).
"""
from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training.events import Interactions
from training.retrieval import top_k
from training.split import distinct_items

__all__ = ["EASE", "binary_matrix", "check_fits", "fit_bytes"]

logger = logging.getLogger("tailor.training.ease")


def binary_matrix(rows: Interactions) -> sp.csr_matrix:
    """Users x items CSR with 1 where the user interacted with the item (float32)."""
    indptr, items = distinct_items(rows.user, rows.item, rows.n_users)
    data = np.ones(items.shape[0], np.float32)
    return sp.csr_matrix((data, items, indptr), shape=(rows.n_users, rows.n_items))


BYTES_PER_PAIR = 34
"""Peak bytes of a fit per entry of the n_items x n_items Gram matrix (its float32 and float64
copies, the inverse and LAPACK's copies, the weights in float64, float32 and transposed):
measured 33.6 with 4,000 items (peak RSS growth)."""


def fit_bytes(n_items: int) -> int:
    """Estimated peak memory of `EASE` on ``n_items`` items."""
    return BYTES_PER_PAIR * n_items * n_items


def memory_bytes() -> tuple[int, str]:
    """The most memory this process may take, and what sets it: the machine's physical memory,
    or less, the address-space limit (``ulimit -v``) or the cgroup's ``memory.max``."""
    found = [(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's")]
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        found.append((soft, "the address-space limit's (ulimit -v)"))
    try:
        found.append((int(Path("/sys/fs/cgroup/memory.max").read_text()), "the cgroup's"))
    except (OSError, ValueError):   # no cgroup v2, or "max"
        pass
    return min(found)


def check_fits(n_items: int, what: str = "EASE") -> None:
    """A ``ValueError`` when `fit_bytes` exceeds the memory this process may take
    (`memory_bytes`): such a fit fails with a MemoryError (or is killed) after everything
    before it ran."""
    need = fit_bytes(n_items)
    have, whose = memory_bytes()
    if need > have:
        raise ValueError(f"{what}: the EASE baseline on {n_items:,} items needs about "
                         f"{need / 1e9:,.1f} GB ({BYTES_PER_PAIR} bytes per item pair), more "
                         f"than {whose} {have / 1e9:,.1f} GB: --no-baselines, or a "
                         "smaller catalog")


class EASE:
    """Fitted EASE weights and the training matrix whose rows are the users' inputs.

    Parameters
    ----------
    rows : Interactions
        Training rows (any event with positive weight counts as an interaction).
    regularization : float
        lambda on the Gram matrix's diagonal.
    """

    def __init__(self, rows: Interactions, regularization: float):
        t0 = time.perf_counter()
        self.x = binary_matrix(rows)
        self.seen = (self.x.indptr.astype(np.int64), self.x.indices.astype(np.int32))
        g = (self.x.T @ self.x).toarray().astype(np.float64)
        g[np.diag_indices_from(g)] += regularization
        p = np.linalg.inv(g)
        b = p / -np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights = np.ascontiguousarray(b, np.float32)
        self._columns = np.ascontiguousarray(self.weights.T)   # item j's vector: column j of B
        logger.info("EASE lambda=%g on %d items in %.1fs", regularization, g.shape[0],
                    time.perf_counter() - t0)

    def recommend(self, users: np.ndarray, k: int = 10, batch: int = 1024) -> np.ndarray:
        """Top ``k`` unseen items per user ([U, k] item rows, -1 = none left)."""
        out = []
        for start in range(0, users.shape[0], batch):
            rows = users[start:start + batch]
            vecs = self.x[rows].toarray()
            out.append(top_k(vecs, self._columns, rows, self.seen, k)[0])
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)
