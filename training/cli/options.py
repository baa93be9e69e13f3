"""Training options shared by ``train``, ``bootstrap`` and ``training.compare_als``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from contract.erasure import read_tombstones
from contract.events import check_event_weights
from contract.keyring import environment_only
from training.als import ALSParams
from training.cli.types import (
    count,
    factors,
    history_len,
    nonnegative_number,
    open_fraction,
    positive_int,
    positive_number,
    recall_target,
    tolerance,
)
from training.content import ContentParams
from training.erasure import drop_erased, erasure_keys, tombstones_for
from training.index import IndexParams
from training.pipeline import TrainConfig
from training.ranker import RankerParams

__all__ = ["add_erasure_options", "add_float_ids", "add_secrets_dir", "add_training_options",
           "config_from_args", "without_erased"]

_A, _R, _I = ALSParams(), RankerParams(), IndexParams()


def _weight(text: str) -> tuple[str, float]:
    """One ``EVENT=WEIGHT`` override, checked against the contract's event types."""
    name, _, value = text.partition("=")
    try:
        weight = float(value)
        check_event_weights({name.strip(): weight})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected EVENT=WEIGHT (a known event, a finite "
                                         f"weight >= 0), got {text!r}: {err}") from None
    return name.strip(), weight


def _secrets_dir(text: str) -> Path | None:
    """A secrets dir as the server reads one: `none` (any case) is the environment only (None),
    and an empty one is refused (`Path("")` is the working directory: an empty
    TAILOR_SECRETS_DIR read the keyring from wherever the command ran, where the server refuses to start)."""
    if environment_only(text):
        return None
    if not text:
        raise argparse.ArgumentTypeError("an empty path would be the working directory (an empty "
                                         "TAILOR_SECRETS_DIR?): give a path (. for that "
                                         "directory), none for TAILOR_SECRET_ERASURE only, or "
                                         "unset TAILOR_SECRETS_DIR")
    return Path(text)


def add_secrets_dir(p: argparse.ArgumentParser) -> None:
    """`--secrets-dir`: where the server's `erasure` keyring is (tombstones); default
    `TAILOR_SECRETS_DIR`, as the server's, else var/secrets. A string default goes through
    `type` as a value given would: the variable is read as the flag is."""
    p.add_argument("--secrets-dir", type=_secrets_dir,
                   default=os.environ.get("TAILOR_SECRETS_DIR", "var/secrets"),
                   help="where the server's `erasure` keyring is (default TAILOR_SECRETS_DIR, "
                        "else var/secrets; none: TAILOR_SECRET_ERASURE only, which wins anyway)")


def add_erasure_options(p: argparse.ArgumentParser) -> None:
    """`--tombstones` and `--secrets-dir`: every command that reads an interaction export drops
    the erased users' rows from before their erasure (`without_erased`), as `train` does."""
    p.add_argument("--tombstones", type=Path, default=None,
                   help="erased users (`training export` writes it): their rows from before "
                        "their erasure are dropped (default: tombstones.csv beside "
                        "--interactions, if there)")
    add_secrets_dir(p)


def without_erased(args):
    """The `keep` filter of `training.readers.load` for the tombstones that apply to
    ``args.interactions`` (``args.tombstones``, else tombstones.csv beside it), or None."""
    path = tombstones_for(Path(args.interactions), args.tombstones)
    tombs = read_tombstones(path) if path is not None else {}
    if not tombs:
        return None
    keys = erasure_keys(args.secrets_dir)

    def keep(rows):
        kept, dropped = drop_erased(rows, tombs, keys)
        print(f"tombstones: {len(tombs)} erased users in {path}, {dropped} rows dropped")
        return kept
    return keep


def add_float_ids(p: argparse.ArgumentParser) -> None:
    """`--float-ids`: read CSV id columns of integers written as floats as the integers."""
    p.add_argument("--float-ids", action="store_true",
                   help="an id column whose ids are all integers, some written as floats "
                        "(12.0, 1.2e+16: pandas' to_csv of a column with a missing value), is "
                        "read as the integers (12); off: ids as written, as the server knows "
                        "them (a WARNING says when a column looks so)")


def add_training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retrieval (implicit ALS)")
    g.add_argument("--factors", type=factors, default=_A.factors)
    g.add_argument("--regularization", type=nonnegative_number, default=_A.regularization)
    g.add_argument("--alpha", type=nonnegative_number, default=_A.alpha, help="confidence = 1 + alpha * w")
    g.add_argument("--iterations", type=positive_int, default=_A.iterations)
    g.add_argument("--half-life-days", type=positive_number, default=_A.half_life_days)
    g.add_argument("--history-len", type=history_len, default=_A.history_len)
    g.add_argument("--cg-steps", type=positive_int, default=_A.cg_steps,
                   help="encoder preconditioned-CG iterations")
    g.add_argument("--event-weight", type=_weight, action="append", default=[],
                   metavar="EVENT=W", help="override an event weight (repeatable)")
    g.add_argument("--seed", type=count, default=_A.seed)
    g.add_argument("--threads", type=count, default=_A.threads,
                   help="threads of ALS, LightGBM and FAISS (0: the libraries' default)")
    g.add_argument("--test-frac", type=open_fraction, default=0.2,
                   help="per-user share of the latest rows held out for the evaluation fit")
    g.add_argument("--eval-users", type=count, default=TrainConfig.eval_users,
                   help="score a seeded sample of this many hold-out users (0: all); the "
                        "manifest records how many of how many, and the bootstrap SE")
    g.add_argument("--no-refit", action="store_true",
                   help="serve the evaluation fit (trained without the hold-out) instead of "
                        "refitting on all rows")
    r = p.add_argument_group("ranker (LightGBM)")
    r.add_argument("--no-ranker", action="store_true", help="retrieval only")
    r.add_argument("--candidates", type=positive_int, default=_R.n_candidates)
    r.add_argument("--ranker-users", type=positive_int, default=_R.max_users)
    r.add_argument("--ranker-objective", choices=("lambdarank", "binary"), default=_R.objective)
    r.add_argument("--context-features", action="store_true",
                   help="also train the ranker on the request's channel and UTC daypart "
                        "(needs a `channel` column; the bundle gets context.npz)")
    r.add_argument("--tree-tolerance", type=tolerance, default=_R.tree_tolerance,
                   help="keep the fewest trees within this fraction of the best validation score")
    p.add_argument("--no-content", action="store_true",
                   help="no content map (content.npz): catalog items without interactions keep "
                        "ALS's zero vectors (never retrieved) and UpsertItems gives new items "
                        "their category's mean vector")
    p.add_argument("--drift-users", type=count, default=TrainConfig.drift_users,
                   help="users sampled for the manifest's drift reference (0: none)")
    i = p.add_argument_group("index (FAISS)")
    i.add_argument("--index", choices=("auto", "flat", "hnsw", "ivf"), default=_I.kind)
    i.add_argument("--flat-threshold", type=count, default=_I.flat_threshold)
    i.add_argument("--target-recall", type=recall_target, default=_I.target_recall)


def config_from_args(args) -> TrainConfig:
    als = ALSParams(factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                    iterations=args.iterations, seed=args.seed, threads=args.threads,
                    half_life_days=args.half_life_days, history_len=args.history_len,
                    cg_steps=args.cg_steps)
    ranker = RankerParams(n_candidates=args.candidates, max_users=args.ranker_users,
                          objective=args.ranker_objective, tree_tolerance=args.tree_tolerance,
                          seed=args.seed, threads=args.threads)
    index = IndexParams(kind=args.index, flat_threshold=args.flat_threshold,
                        target_recall=args.target_recall, threads=args.threads, seed=args.seed)
    weights = check_event_weights(dict(args.event_weight))
    return TrainConfig(als=als, ranker=ranker, index=index, event_weights=weights,
                       content=ContentParams(enabled=not args.no_content),
                       test_frac=args.test_frac, use_ranker=not args.no_ranker,
                       refit=not args.no_refit, drift_users=args.drift_users,
                       eval_users=args.eval_users,
                       context_features=getattr(args, "context_features", False))
