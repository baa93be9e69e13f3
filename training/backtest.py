"""Served backtest: the number reported is the number served (issue 21).

``python -m training backtest --interactions F [--items F] (--cutoff T | --test-frac 0.2)``

1. Split the positive-weight rows: before the cutoff (``--cutoff``, unix seconds or ISO date) or
   all but the last ``test_frac`` of each user's rows (`training.split.temporal_split`).
2. Train a bundle on the rows before (the pipeline evaluates on its own hold-out, then refits),
   start a real server on a free loopback port (``python -m server --port P --data-dir TMP
   --bundle B``) and ask RecommendBatch (k = 10) for every user with later activity.
3. Score the answers against each user's distinct later items (`score`): recall, NDCG, MAP, MRR
   at 10, catalog coverage, the share of recommended items the user had already interacted with
   before the cutoff, and a bootstrap standard error of NDCG@10 over users; ``cold_share``: the
   share of recommended slots taken by catalog items nobody interacted with before the split
   (served from their content vector, `training.content.embed_cold`).
4. Beside it: popularity, implicit ALS (small grid) and EASE (lambda swept), fitted on the same
   rows, each with every already-seen item filtered. Baseline hyper-parameters are chosen on an
   inner temporal split of the training rows, never on the backtest's later rows. Users without
   training rows get the popularity answer from every baseline (the server answers them cold).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np

from contract.events import EVENT_TYPES
from training.evaluate import eval_units, measured, popular_unseen, rerank
from training.events import Catalog, Interactions, event_weights
from training.metrics import bootstrap_se, hits, per_user_metrics
from training.split import distinct_items, temporal_split

__all__ = [
    "ALS_GRID",
    "EASE_GRID",
    "cold_share",
    "format_backtest",
    "new_items",
    "offline_recommendations",
    "parse_cutoff",
    "run_backtest",
    "score",
    "serve_recommendations",
    "split_rows",
    "users_per_batch",
]

logger = logging.getLogger("tailor.training.backtest")

K = 10
ROOT = Path(__file__).resolve().parents[1]
ALS_GRID = [{"factors": f, "regularization": r, "alpha": a}
            for f in (32, 64, 128) for r in (1.0, 10.0, 100.0) for a in (1.0, 10.0)]
"""implicit ALS grid (tuned on an inner split of the training rows). A first grid with
regularization <= 1 picked its edge; on the long-history small world regularization 50 scored
0.166 against 0.150 at 1 (factors 64, alpha 1), so the grid reaches well past it. On the
default demo world this grid picks factors 128, regularization 100, alpha 1 (both on its edge)
and scores NDCG@10 0.113 against 0.096 for the first grid's pick."""
EASE_GRID = (50.0, 200.0, 1000.0, 5000.0)
"""EASE lambdas swept (on the same inner split)."""


def parse_cutoff(text: str) -> int:
    """Unix seconds from ``1700000000`` or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return int(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def split_rows(inter: Interactions, cutoff: int | None = None, test_frac: float | None = None,
               weights: dict | None = None) -> tuple[Interactions, Interactions]:
    """``(before, after)``: positive-weight rows before ``cutoff`` (or all but each user's last
    ``test_frac``) and the rows after it."""
    rows = inter.subset(event_weights(inter, weights) > 0)
    if cutoff is not None:
        before = rows.ts < cutoff
    else:
        before, _ = temporal_split(rows, test_frac if test_frac is not None else 0.2)
    return rows.subset(before), rows.subset(~before)


def new_items(test: tuple, seen: tuple) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``test`` without the items each user had already seen (``seen``, same user codes)."""
    n_users = test[0].shape[0] - 1
    owner = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(test[0]))
    keep = ~hits(test[1][:, None].astype(np.int64), seen[0], seen[1], owner)[:, 0]
    indptr = np.r_[0, np.cumsum(np.bincount(owner[keep], minlength=n_users))]
    return indptr.astype(np.int64), test[1][keep]


def score(recs: np.ndarray, users: np.ndarray, test: tuple, seen: tuple, n_items: int,
          k: int = K) -> dict:
    """Backtest metrics of ``recs`` [U, >=k] (item rows, -1 = empty) for user codes ``users``.

    Parameters
    ----------
    test, seen : tuple
        CSR ``(indptr, items)`` by user code: distinct later items, and items seen before.

    Returns
    -------
    dict
        ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr@k`` (means over users with later items),
        ``ndcg@k_se`` (bootstrap over those users), ``coverage`` (distinct recommended items /
        n_items), ``seen_share`` (recommended items the user had seen / recommended items),
        ``n_users``; ``recall@k_new``, ``ndcg@k_new`` against the later items the user had
        not seen before (what a recommender that filters seen items can reach), averaged over
        the ``n_users_new`` users who have such items.
    """
    new = per_user_metrics(recs, *new_items(test, seen), users, k)
    per = per_user_metrics(recs, *test, users, k)
    recs, users = per.pop("recs"), per.pop("users")
    out = {name: float(v.mean()) if v.shape[0] else 0.0 for name, v in per.items()}
    out[f"ndcg@{k}_se"] = bootstrap_se(per[f"ndcg@{k}"])
    filled = recs >= 0
    out["coverage"] = float(np.unique(recs[filled]).shape[0] / max(n_items, 1))
    was_seen = hits(recs, seen[0], seen[1], users)
    out["seen_share"] = float(was_seen.sum() / max(int(filled.sum()), 1))
    out["n_users"] = int(recs.shape[0])
    for name in (f"recall@{k}", f"ndcg@{k}"):
        out[f"{name}_new"] = float(new[name].mean()) if new[name].shape[0] else 0.0
    out["n_users_new"] = int(new["users"].shape[0])
    return out


# The served model filters every seen item for good, as the baselines are scored: the
# production policy's time windows (`seen_exclusion_days`) count from the server's clock, and a
# backtest over past data would otherwise let every windowed item back in.
FULL_SEEN_FILTERING = {
    "TAILOR_SEEN_EXCLUSION_DAYS": json.dumps({t: "inf" for t in EVENT_TYPES}),
    "TAILOR_REPEATABLE_CATEGORIES": "[]",
}


NOT_INHERITED = frozenset(f"TAILOR_{name}" for name in (
    "HOST", "PORT", "METRICS_PORT", "PUBLIC_HTTP_PORT", "PUBLIC_URL", "AUTH_CONFIG", "TLS_CERT",
    "TLS_KEY", "TLS_CLIENT_CA", "INSECURE", "WORKERS", "DATA_DIR", "BUNDLE",
    "SMTP_HOST", "SMTP_PORT", "SMTP_SECURITY", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_FROM",
    "SMTP_TIMEOUT_SECONDS", "SMTP_CA_FILE", "DKIM_KEY_FILE", "DKIM_SELECTOR", "DKIM_DOMAIN",
    "SMS_WEBHOOK_URL", "PUSH_WEBHOOK_URL"))
"""Settings that say where and how a server listens and who may call it: a production server's
(an environment file sourced for the retrain job) would make the backtest's loopback server
bind the production metrics or public port (in use: it exits), listen on 0.0.0.0 (refused
without TLS) or refuse the backtest's own calls. And where messages are delivered (SMTP relay,
DKIM key, SMS and push webhooks): the loopback server sends none, and a production relay
checked without the production `--insecure` (plain SMTP off this host), a webhook without its
keyring here or a DKIM key on another host would make it exit. Every other setting (keyrings,
limits, serving policy) is inherited, so the bundle is served as production serves it."""


def _inherited(environ) -> dict:
    """`environ` without `NOT_INHERITED` (names compared as the settings read them: any case)."""
    return {k: v for k, v in environ.items() if k.upper() not in NOT_INHERITED}


class _Server:
    """``python -m server`` on a free loopback port (full seen filtering), stopped on exit; one
    that exits or is not ready in time is a `ChildProcessError` (an `OSError`: the CLI's one
    ``error:`` line) quoting the last line of its log."""

    def __init__(self, data_dir: Path, bundle: Path, timeout: float = 180.0):
        import socket

        # the server runs from ROOT: a path relative to the caller's directory (`retrain
        # --serving-bundle b/v`, `--work-dir w`) would name another one there
        data_dir, bundle = Path(data_dir).resolve(), Path(bundle).resolve()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self.log = open(data_dir / "server.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(self.port), "--data-dir",
             str(data_dir), "--bundle", str(bundle), "--workers", "1"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**_inherited(os.environ), **FULL_SEEN_FILTERING,
                 "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise ChildProcessError(f"the backtest's server exited {self.proc.returncode} "
                                        f"before serving: {self._last_line()}")
            try:
                with grpc.insecure_channel(self.target) as ch:
                    status = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=1)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ChildProcessError(f"the backtest's server was not ready after {timeout}s: "
                                f"{self._last_line()}")

    def _last_line(self) -> str:
        """The last line of the server's log (in a directory removed on the way out)."""
        try:
            lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1][-300:] if lines else "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


SERVER_LIMITS = {"recommend_k": 1000, "batch_items": 100_000, "batch_users": 1000}
"""The server's defaults (`Limits`) of the limits a RecommendBatch is checked against."""


def users_per_batch(k: int = K, chunk: int = 500) -> int:
    """Users of ``k`` items each in one RecommendBatch the backtest's server takes (at most
    ``chunk``): its limits, which it inherits from this environment (`readers.server_limit`);
    a ``ValueError`` naming the variable when it cannot answer ``k`` items a user."""
    from training.readers import server_limit

    limits = {name: server_limit(name, default) for name, default in SERVER_LIMITS.items()}
    for name in ("recommend_k", "batch_items"):
        if limits[name] < k:
            raise ValueError(f"{k} items a user cannot be asked: the server's "
                             f"TAILOR_LIMITS__{name.upper()} is {limits[name]} (the backtest's "
                             "server inherits this environment's limits)")
    return max(1, min(chunk, limits["batch_users"], limits["batch_items"] // k))


def serve_recommendations(data_dir: Path, bundle: Path, user_ids: list[str], item_row: dict,
                          k: int = K, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Ask a real server for ``k`` items per user; returns item rows [U, k] and cold-start flags.

    Batches are as large as the server's limits take (`users_per_batch`). A user the server
    refuses on its own is a row of -1 (a miss), counted in a WARNING; a call it refuses whole
    is a `ChildProcessError` (the CLI's one ``error:`` line) naming the status."""
    from protos.tailor.v1 import recommendation_pb2 as pb
    from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc

    chunk = users_per_batch(k, chunk)
    recs = np.full((len(user_ids), k), -1, np.int64)
    cold = np.zeros(len(user_ids), bool)
    refused: Counter = Counter()
    with _Server(data_dir, bundle) as server, grpc.insecure_channel(
            server.target, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = pb_grpc.RecommendationServiceStub(ch)
        for start in range(0, len(user_ids), chunk):
            batch = pb.RecommendBatchRequest(partial=True, requests=[
                pb.RecommendRequest(user_id=u, k=k, channel="")
                for u in user_ids[start:start + chunk]])
            try:
                reply = stub.RecommendBatch(batch, timeout=300)
            except grpc.RpcError as err:
                raise ChildProcessError(f"the backtest's server answered {err.code().name}: "
                                        f"{(err.details() or '')[:300]}") from None
            for j, resp in enumerate(reply.responses):
                if resp.HasField("error"):
                    refused[resp.error.code] += 1
                    continue
                rows = [item_row[s.item_id] for s in resp.items[:k]]
                recs[start + j, :len(rows)] = rows
                cold[start + j] = resp.cold_start
    if refused:   # the codes only: an entry's message may quote its user id
        logger.warning("%d of %d users got no answer (%s): scored as misses",
                       sum(refused.values()), len(user_ids),
                       ", ".join(f"{code}: {n}" for code, n in refused.most_common()))
    return recs, cold


def offline_recommendations(result, users: np.ndarray, n_candidates: int,
                            batch: int = 8192) -> np.ndarray:
    """The same bundle's answers computed in-process (`training.evaluate`'s path: exact top-k,
    every seen item filtered), to tell serving effects from period effects."""
    from training.retrieval import encoder_session

    session = None if result.ranker is None else encoder_session(
        result.ranker.SerializeToString(), result.config.ranker.threads)
    out = []
    for start in range(0, users.shape[0], batch):
        rows = users[start:start + batch]
        cand, scores = result.stage.candidates(rows, max(n_candidates, K))
        out.append(cand[:, :K] if session is None
                   else rerank(session, result.stage.features(rows, cand, scores), cand))
    return np.concatenate(out) if out else np.zeros((0, K), np.int64)


def _tune(name: str, make, grid: list, rows: Interactions, k: int = K):
    """Fit ``make(rows, **params)`` for the grid point with the best inner-split NDCG@k."""
    if len(grid) == 1:
        return make(rows, **grid[0]), grid[0], {}
    tr, te = temporal_split(rows, 0.2)
    inner, held = rows.subset(tr), rows.subset(te)
    test = distinct_items(held.user, held.item, held.n_users)
    seen = distinct_items(inner.user, inner.item, inner.n_users)
    users = np.flatnonzero(np.diff(test[0]) > 0)
    found = {}
    for params in grid:
        recs = make(inner, **params).recommend(users, k)
        found[repr(params)] = score(recs, users, test, seen, rows.n_items, k)[f"ndcg@{k}"]
        logger.info("%s %s: inner ndcg@%d %.4f", name, params, k, found[repr(params)])
    best = max(grid, key=lambda p: found[repr(p)])
    return make(rows, **best), best, found


def _ease(rows, regularization):
    from training.ease import EASE

    return EASE(rows, regularization)


def _als(rows, threads: int = 2, seed: int = 0, **params):
    from training.compare_als import ImplicitALS

    return ImplicitALS(rows, seed=seed, threads=threads, **params)


def _baselines(before: Interactions, users: np.ndarray, known: np.ndarray, seen: tuple,
               als_grid: list, ease_grid: tuple, threads: int) -> dict:
    """Recommendation lists of popularity, ALS and EASE (popularity for unknown users)."""
    by_pop = np.argsort(-np.bincount(before.item, minlength=before.n_items), kind="stable")
    popular = popular_unseen(by_pop, users, seen, K)
    out = {"popularity": (popular, {})}
    warm = users[known]
    for name, make, grid in (("implicit-als", lambda r, **p: _als(r, threads=threads, **p),
                              als_grid),
                             ("ease", lambda r, regularization: _ease(r, regularization),
                              [{"regularization": g} for g in ease_grid])):
        if not grid:
            continue
        t0 = time.perf_counter()
        model, best, _ = _tune(name, make, grid, before)
        recs = popular.copy()
        recs[known] = model.recommend(warm, K)
        out[name] = (recs, {"params": best, "seconds": round(time.perf_counter() - t0, 1)})
    return out


def backtest_split(inter: Interactions, config, cutoff: int | None = None,
                   test_frac: float | None = None, what: str = "backtest") -> tuple:
    """``(before, after, test, seen, users, unaskable)`` of `run_backtest`: `split_rows`, the
    distinct items of each side, the users with a later item whose id the server's API takes
    (`askable`), and how many it does not (left out); a ``ValueError`` (``what``: ...) when one
    side is empty or the server's limits cannot answer ``K`` items a user (`users_per_batch`;
    `train --backtest` checks this before it trains)."""
    before, after = split_rows(inter, cutoff, test_frac, config.event_weights)
    test = distinct_items(after.user, after.item, after.n_users)
    seen = distinct_items(before.user, before.item, before.n_users)
    users, unaskable = askable(inter, np.flatnonzero(np.diff(test[0]) > 0))
    try:
        users_per_batch()
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    if not len(before) or not len(users):
        problem = "no rows before the split" if not len(before) else \
            "no user has rows after the split"
        span = f"{int(inter.ts.min())} .. {int(inter.ts.max())}" if len(inter) else "nothing"
        raise ValueError(f"{what}: {problem}: nothing to train on or to score (the rows span "
                         f"{span}; a --cutoff between them, or --test-frac)")
    return before, after, test, seen, users, unaskable


def askable(inter: Interactions, users: np.ndarray) -> tuple[np.ndarray, int]:
    """``(users, n)``: the user codes whose id the server's API takes (`readers.unaskable_ids`:
    one such id fails a whole RecommendBatch), and how many were left out (logged)."""
    from training.readers import unaskable_ids

    bad = unaskable_ids(inter.user_ids[users]) if len(users) else np.zeros(0, bool)
    if bad.any():
        logger.warning("%d users with later rows have an id the server's API refuses (over "
                       "TAILOR_LIMITS__ID_BYTES, or a character no id may hold): not asked, not scored",
                       int(bad.sum()))
    return users[~bad], int(bad.sum())


def run_backtest(inter: Interactions, catalog: Catalog, config, cutoff: int | None = None,
                 test_frac: float | None = None, baselines: bool = True,
                 als_grid: list | None = None, ease_grid: tuple | None = None,
                 workdir: str | Path | None = None) -> dict:
    """Train on the rows before the split, serve, ask, score; the same for the baselines.

    Returns
    -------
    dict
        ``methods``: name -> `score` dict (plus ``params`` for tuned baselines); ``manifest``:
        the served bundle's evaluation-fit metrics and fits; ``split``: row and user counts.
    """
    from training.bundle import write_bundle
    from training.pipeline import train

    before, after, test, seen, users, unaskable = backtest_split(inter, config, cutoff, test_frac)
    ease_grid = EASE_GRID if ease_grid is None else ease_grid
    if baselines and ease_grid:   # refused now, not after the training and serving
        from training.ease import check_fits

        check_fits(inter.n_items, "backtest")
    known = np.diff(seen[0])[users] > 0
    t0 = time.perf_counter()
    result = train(before, catalog, config)
    with tempfile.TemporaryDirectory(prefix="tailor-backtest-", dir=workdir) as tmp:
        data_dir = Path(tmp)
        bundle = write_bundle(result, data_dir / "bundles")
        item_row = {iid: i for i, iid in enumerate(inter.item_ids.tolist())}
        t1 = time.perf_counter()
        recs, cold = serve_recommendations(data_dir, bundle, inter.user_ids[users].tolist(),
                                           item_row)
        serve_s = time.perf_counter() - t1
    methods = {"tailor (served)": {**score(recs, users, test, seen, inter.n_items),
                                   "cold_start": int(cold.sum()),
                                   "seconds": round(time.perf_counter() - t0, 1)}}
    offline = offline_recommendations(result, users, config.ranker.n_candidates)
    methods["tailor (offline)"] = score(offline, users, test, seen, inter.n_items)
    versus = paired_gap(recs, offline, users, test)
    lists = {"tailor (served)": recs, "tailor (offline)": offline}
    if baselines:
        grid = ALS_GRID if als_grid is None else als_grid
        found = _baselines(before, users, known, seen, grid, ease_grid, config.als.threads)
    else:
        found = _baselines(before, users, known, seen, [], (), config.als.threads)
    for name, (r, info) in found.items():
        methods[name] = {**score(r, users, test, seen, inter.n_items), **info}
        lists[name] = r
    unseen = np.bincount(before.item, minlength=before.n_items) == 0
    for name, r in lists.items():
        methods[name]["cold_share"] = cold_share(r, unseen)
    return {"methods": methods, "served_vs_offline": versus,
            "manifest": {"metrics": result.metrics, "fits": result.fits},
            "split": {"cutoff": cutoff, "test_frac": None if cutoff is not None else test_frac,
                      "rows_before": len(before), "rows_after": len(after),
                      "users_scored": int(users.shape[0]), "users_unknown": int((~known).sum()),
                      "users_unaskable": unaskable,
                      "serve_seconds": round(serve_s, 1)}}


def paired_gap(a: np.ndarray, b: np.ndarray, users: np.ndarray, test: tuple, k: int = K) -> dict:
    """The mean per-user NDCG@k of ``a`` minus ``b`` (two lists for the same ``users``), and
    its bootstrap SE over those users: paired, far smaller than either figure's own SE (demo
    world: 0.0017 against 0.0048), which would read a systematic gap as noise."""
    ndcg = [per_user_metrics(r, *test, users, k)[f"ndcg@{k}"] for r in (a, b)]
    diff = ndcg[0] - ndcg[1]
    return {f"ndcg@{k}": float(diff.mean()) if diff.size else 0.0, "se": bootstrap_se(diff)}


def cold_share(recs: np.ndarray, cold: np.ndarray) -> float:
    """Share of the filled slots of ``recs`` (item rows, -1 = empty) that ``cold`` [n_items]
    marks."""
    filled = recs[recs >= 0]
    return float(cold[filled].mean()) if filled.size else 0.0


def format_backtest(report: dict) -> str:
    """The table of `run_backtest`, with the evaluation fit's NDCG@10 for comparison."""
    cols = ("recall@10", "ndcg@10", "ndcg@10_se", "map@10", "mrr@10", "coverage", "seen_share",
            "cold_share", "ndcg@10_new")
    lines = [f"{'method':<16}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in report["methods"].items():
        lines.append(f"{name:<16}" + "".join(f"{m[c]:>12.4f}" for c in cols)
                     + (f"  {m['params']}" if m.get("params") else ""))
    s = report["split"]
    ev = report["manifest"]["metrics"]
    lines.append(f"users scored = {s['users_scored']} ({s['users_unknown']} unknown before the "
                 f"split); rows before/after = {s['rows_before']}/{s['rows_after']}"
                 + (f"; {s['users_unaskable']} left out (an id the server's API refuses)"
                    if s.get("users_unaskable") else ""))
    lines.append("ndcg@10_new: scored against the later items the user had not seen before "
                 "(what a seen-filtering recommender can reach); cold_share: recommended slots "
                 "of items nobody interacted with before the split")
    claimed = (f"{ev['model']['ndcg@10']:.4f} on {ev['n_eval_users']} {eval_units(ev)}"
               if measured(ev) else "none (its fit had no hold-out)")
    served, offline = report["methods"]["tailor (served)"], report["methods"]["tailor (offline)"]
    versus = report["served_vs_offline"]
    gap = versus["ndcg@10"] / max(versus["se"], 1e-12)
    lines.append(f"served vs offline (the same bundle on the same rows, in process): ndcg@10 "
                 f"{served['ndcg@10']:.4f} vs {offline['ndcg@10']:.4f}, {gap:+.1f} SE "
                 f"(the SE of the per-user difference, {versus['se']:.4f})")
    lines.append(f"the bundle's manifest (evaluation fit) ndcg@10 = {claimed}: its own hold-out, "
                 "the last --test-frac of each user's rows before the split, not these rows "
                 "(`train --backtest` compares on the same rows)")
    return "\n".join(lines)
