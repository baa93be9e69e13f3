"""Compare the default Tailor pipeline with plain `implicit` ALS under the same temporal split.

``python -m training.compare_als --interactions F [--format movielens] [--factors 64]``

Both models see exactly the same training rows (`training.split.temporal_split`), exclude the same
training items and are scored with the same `training.metrics` definitions. The baseline is
``implicit.cpu.als.AlternatingLeastSquares(factors=64)`` with its default hyper-parameters, fitted
on the user x item matrix of summed event weights (ratings for MovieLens) without time decay.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import scipy.sparse as sp

from training.cli.options import add_erasure_options, without_erased
from training.cli.types import positive_int
from training.evaluate import NOTHING_MEASURED, format_table, measured
from training.events import event_weights
from training.metrics import ranking_metrics
from training.pipeline import TrainConfig, train
from training.readers import load
from training.split import distinct_items, temporal_split

__all__ = ["ImplicitALS", "implicit_baseline", "main", "weight_matrix"]

logger = logging.getLogger("tailor.training.compare_als")


def implicit_baseline(train_rows, test_rows, factors: int = 64, seed: int = 0,
                      threads: int = 2) -> dict:
    """Metrics of implicit's ALS (default hyper-parameters) on the same split."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    w = event_weights(train_rows)
    ui = sp.csr_matrix((w, (train_rows.user, train_rows.item)),
                       shape=(train_rows.n_users, train_rows.n_items), dtype=np.float32)
    ui.sum_duplicates()
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=factors, random_state=seed, num_threads=threads)
        model.fit(ui, show_progress=False)
    indptr, items = distinct_items(test_rows.user, test_rows.item, test_rows.n_users)
    users = np.flatnonzero(np.diff(indptr) > 0)
    recs, _ = model.recommend(users, ui[users], N=10, filter_already_liked_items=True)
    m = ranking_metrics(np.asarray(recs), indptr, items, users, train_rows.n_items, 10)
    return {k: round(v, 6) for k, v in m.items() if k != "n_users"}


def weight_matrix(rows) -> sp.csr_matrix:
    """Users x items CSR of summed event weights (no time decay), float32."""
    ui = sp.csr_matrix((event_weights(rows), (rows.user, rows.item)),
                       shape=(rows.n_users, rows.n_items), dtype=np.float32)
    ui.sum_duplicates()
    return ui


class ImplicitALS:
    """implicit's CPU ALS fitted on `weight_matrix` (confidence ``1 + alpha * w``).

    ``recommend`` filters every item the user interacted with in ``rows`` (full seen filtering).
    """

    def __init__(self, rows, factors: int = 64, regularization: float = 0.01, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 0, threads: int = 2):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.ui = weight_matrix(rows)
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(
                factors=factors, regularization=regularization, alpha=alpha,
                iterations=iterations, random_state=seed, num_threads=threads)
            self.model.fit(self.ui, show_progress=False)

    def recommend(self, users: np.ndarray, k: int = 10) -> np.ndarray:
        ids, _ = self.model.recommend(users, self.ui[users], N=k, filter_already_liked_items=True)
        ids = np.asarray(ids, np.int64).reshape(users.shape[0], -1)
        return np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.compare_als", description=__doc__)
    p.add_argument("--interactions", required=True)
    p.add_argument("--items")
    p.add_argument("--format", choices=("tailor", "movielens"), default="tailor")
    p.add_argument("--factors", type=positive_int, default=64, help="factors of the implicit baseline")
    add_erasure_options(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    inter, catalog = load(args.interactions, args.items, args.format, keep=without_erased(args))
    t0 = time.perf_counter()
    result = train(inter, catalog, TrainConfig())
    if not measured(result.metrics):
        raise ValueError(NOTHING_MEASURED)
    t1 = time.perf_counter()
    rows = inter.subset(event_weights(inter) > 0)
    tr, te = temporal_split(rows, 0.2)
    baseline = implicit_baseline(rows.subset(tr), rows.subset(te), args.factors)
    t2 = time.perf_counter()
    print(format_table({**result.metrics, "implicit-als": baseline}))
    print(f"{'implicit-als':<12}" + "".join(f"{baseline[c]:>11.4f}" for c in
                                             ("recall@10", "ndcg@10", "map@10", "coverage")))
    print(f"tailor pipeline ndcg@10 = {result.metrics['model']['ndcg@10']:.4f} "
          f"(ranker {'kept' if result.ranker is not None else 'dropped'}, {t1 - t0:.0f}s); "
          f"implicit ALS({args.factors}) ndcg@10 = {baseline['ndcg@10']:.4f} ({t2 - t1:.0f}s)")
    return 0


if __name__ == "__main__":
    from training.cli import run_guarded

    raise SystemExit(run_guarded(main))
