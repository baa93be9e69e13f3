"""Off-policy evaluation of campaign policies: IPS, SNIPS and doubly robust, with 95% intervals.

    python -m training ope --logs LOG [--format tailor|obd] [--campaign C]
        (--policy NAME [--param key=value ...] | --target OTHER_LOG) [--json]

Logged rounds need the action taken, its logging propensity and the reward. Two formats:

* ``tailor`` (our decision log, JSON lines), one object per decision::

    {"decision_id": "...", "campaign_id": "...", "user_id": "...", "timestamp": 1700000000.5,
     "arm": 2, "propensity": 0.25, "reward": 1.0, "context": [0.1, -0.3], "position": 0}

  ``timestamp`` is Unix seconds (float) or ISO-8601 (UTC unless it gives an offset);
  ``context`` a list of floats (may be empty); ``position`` an int >= 0 (0 if the campaign
  has one slot); a missing or null ``timestamp``, ``context`` or ``position`` takes its
  default (0, empty, 0). A context
  column that is NaN on every row (a PII feature that ExportDecisions hid from a reader
  without pii-reader) is dropped. Holdout and suppressed decisions (arm < 0) and pending
  ones (``reward`` null or NaN: no outcome yet) are skipped; the report counts them
  (``skipped``, and the table's first line). `write_decision_log` writes
  exactly this format.
* ``obd``: the Open Bandit Dataset CSV (item_id, position, click, propensity_score,
  user_feature_*, user-item_affinity_*).

When every decision has a ``user_id``, the intervals count each user once (a user's
decisions are resampled together: they are not independent).

The candidate chooses among ``--arms`` actions: by default the highest logged arm + 1, which
undercounts a campaign whose last variants were never chosen in the log (then give it).

Support: the logs value only the arms their policy could take. A round logged with propensity
1 (ucb1, egreedy at epsilon 0) had every other arm at 0, and the candidate's probability of
those arms counts as reward 0 in every estimator, as does its probability of an arm no logged
round took (``--arms`` past the logged ones); the report gives that share of its choices
(`unsupported_share`) and the table a warning when it is above 0. A candidate that never takes
the logged arm of any round (no overlap) is refused: nothing in the logs values it.
Estimates that rest on the rewards of fewer than `MIN_EFFECTIVE_ROUNDS` rounds
(`effective_rounds`) get a warning: their intervals under-cover.

Candidate policies: a `kernels.bandits` policy replayed in time order over the logs (at each
round its action distribution is computed, then it learns from the logged action and reward,
i.e. a policy warm-started on the same feedback), or ``--target``: the empirical per-position
action distribution of another log, whose on-policy value (mean reward) is printed beside.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from datetime import UTC, datetime

import numpy as np

from kernels import bandits
from training.cli.types import positive_int
from training.readers import json_objects

ESTIMATORS = ("ips", "snips", "dr")
OBD_COLUMNS = frozenset({"timestamp", "item_id", "position", "click", "propensity_score"})
Z95 = 1.959963984540054


@dataclasses.dataclass
class LoggedBandit:
    """Logged rounds in time order. ``context`` is (n, d); positions are 0-based."""

    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    context: np.ndarray
    n_actions: int
    n_positions: int
    groups: np.ndarray | None = None
    """One label per round (the user id): the intervals count each group once."""
    skipped: dict | None = None
    """Decisions of the log not used as rounds, by why: ``pending`` (no reward yet) and
    ``holdout_or_suppressed`` (arm < 0); None for formats that skip none."""

    def __len__(self) -> int:
        return self.action.shape[0]


def _finish(action, position, reward, pscore, context, timestamp, n_actions=None, groups=None):
    order = np.argsort(timestamp, kind="stable")
    action = np.asarray(action, np.int64)[order]
    pscore = np.asarray(pscore, np.float64)[order]
    if len(action) == 0 or (action < 0).any() or not ((pscore > 0) & (pscore <= 1)).all():
        raise ValueError("logs need >= 1 round, arms >= 0 and propensities in (0, 1]")
    position = np.asarray(position, np.int64)[order]
    if (position < 0).any():
        raise ValueError("logs need positions >= 0 (0 for a campaign of one slot)")
    return LoggedBandit(action, position, np.asarray(reward, np.float64)[order], pscore,
                        np.asarray(context, np.float64).reshape(len(action), -1)[order],
                        int(n_actions or action.max() + 1), int(position.max() + 1),
                        None if groups is None else np.asarray(groups)[order])


def read_obd(path: str) -> LoggedBandit:
    """Open Bandit Dataset CSV: context = affinities + one-hot user features."""
    import pandas as pd

    df = pd.read_csv(path, index_col=0)
    missing = sorted(OBD_COLUMNS - set(df.columns))
    if missing:
        raise ValueError(f"{path}: not an Open Bandit Dataset CSV, missing columns {missing}")
    users = [c for c in df.columns if c.startswith("user_feature_")]
    affinity = [c for c in df.columns if c.startswith("user-item_affinity_")]
    ctx = np.hstack([df[affinity].to_numpy(np.float64),
                     pd.get_dummies(df[users].astype(str)).to_numpy(np.float64)])
    pos = df["position"].to_numpy()
    pos = np.searchsorted(np.unique(pos), pos)
    n_actions = max(len(affinity), int(df["item_id"].max()) + 1)
    ts = pd.to_datetime(df["timestamp"]).astype("int64").to_numpy()
    return _finish(df["item_id"], pos, df["click"], df["propensity_score"], ctx, ts, n_actions)


def _timestamp(value) -> float:
    """Unix seconds of a number or an ISO-8601 time (UTC unless it gives an offset)."""
    if isinstance(value, (int, float)):
        return float(value)
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def read_decision_log(path: str, campaign_id: str | None = None,
                      flag: str = "--campaign") -> LoggedBandit:
    """Tailor JSON-lines decision log (see module docstring); holdout rows are skipped.

    The decisions of ``campaign_id``; without it the log must hold one campaign's (arm
    indexes name each campaign's own variants).
    """
    rows = []
    campaigns: set = set()
    skipped = {"pending": 0, "holdout_or_suppressed": 0}
    with open(path) as fh:
        for lineno, rec in json_objects(fh, f"{path}:"):
            missing = {"arm", "propensity", "reward"} - rec.keys()
            if missing:
                raise ValueError(f"{path}:{lineno}: missing {sorted(missing)}")
            _check_types(f"{path}:{lineno}", rec)
            if campaign_id and rec.get("campaign_id") != campaign_id:
                continue
            if rec["arm"] < 0:
                skipped["holdout_or_suppressed"] += 1
                continue
            campaigns.add(rec.get("campaign_id"))
            if rec["reward"] is None or rec["reward"] != rec["reward"]:
                skipped["pending"] += 1
                continue  # pending: no outcome yet (null, or NaN as ExportDecisions sends it)
            rec["_line"] = lineno
            rows.append(rec)
    if not rows:
        which = f" of campaign {campaign_id!r}" if campaign_id else ""
        raise ValueError(f"{path}: no logged decisions{which}")
    if len(campaigns) > 1:
        names = ", ".join(sorted(str(c) for c in campaigns))
        raise ValueError(f"{path}: holds the decisions of {len(campaigns)} campaigns ({names}); "
                         f"evaluate one at a time with {flag}")
    ctx = [list(r.get("context") or []) for r in rows]
    if len({len(c) for c in ctx}) != 1:
        raise ValueError(f"{path}: context vectors differ in length")
    log = _finish([r["arm"] for r in rows], [r.get("position") or 0 for r in rows],
                  [r["reward"] for r in rows], [r["propensity"] for r in rows],
                  _known_context(path, np.array(ctx, np.float64).reshape(len(rows), -1),
                                 [r["_line"] for r in rows]),
                  [_timestamp(r.get("timestamp") or 0.0) for r in rows],
                  groups=_users(rows))
    return dataclasses.replace(log, skipped=skipped)


def _users(rows: list[dict]) -> list[str] | None:
    """The rounds' user ids, if every round has one: one user's decisions are not independent
    (the same person, often the same reaction), so the intervals resample users."""
    users = [r.get("user_id") for r in rows]
    return users if all(isinstance(u, str) and u for u in users) else None


def _check_types(where: str, rec: dict) -> None:
    """An int arm, a number propensity and a number (or null: pending) reward."""
    arm = rec["arm"]
    if isinstance(arm, bool) or not isinstance(arm, int):
        raise ValueError(f"{where}: arm: expected a whole number, got {arm!r}")
    for key in ("propensity", "reward"):
        x = rec[key]
        if (x is None and key == "reward") or (isinstance(x, (int, float))
                                               and not isinstance(x, bool)):
            continue
        raise ValueError(f"{where}: {key}: expected a number, got {x!r}")


def _known_context(path: str, ctx: np.ndarray, lines: list[int]) -> np.ndarray:
    """The context without its hidden columns: ExportDecisions sends NaN at the positions of
    PII features to a reader without the pii-reader role, on every row; such a column carries
    nothing and is dropped. A value missing on some rows only is an error."""
    missing = np.isnan(ctx)
    hidden = missing.all(axis=0)
    rows, cols = np.nonzero(missing[:, ~hidden])
    if rows.size:
        col = int(np.flatnonzero(~hidden)[cols[0]])
        raise ValueError(f"{path}:{lines[rows[0]]}: context[{col}] is not a number (NaN on "
                         "some rows only)")
    return ctx[:, ~hidden]


def write_decision_log(path: str, records) -> None:
    """Write dicts with the decision-log keys as JSON lines (the server's export format)."""
    keys = ("decision_id", "campaign_id", "user_id", "timestamp", "arm", "propensity",
            "reward", "context", "position")
    with open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps({k: rec.get(k) for k in keys}) + "\n")


def read_logs(path: str, fmt: str, campaign_id: str | None = None,
              flag: str = "--campaign") -> LoggedBandit:
    if fmt == "obd":
        return read_obd(path)
    if fmt == "tailor":
        return read_decision_log(path, campaign_id, flag)
    raise ValueError(f"format must be 'obd' or 'tailor', got {fmt!r}")


# ---------------------------------------------------------------------------------------------
# Candidate policies -> action distribution (n, K) over the logged rounds


def empirical_policy(target: LoggedBandit, n_actions: int, n_positions: int) -> np.ndarray:
    """(n_positions, K) per-position action frequencies of `target` (its empirical policy)."""
    if target.n_actions > n_actions or target.n_positions > n_positions:
        raise ValueError("target log uses actions or positions absent from the evaluated logs")
    counts = np.zeros((n_positions, n_actions))
    np.add.at(counts, (target.position, target.action), 1.0)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def replay_policy(log: LoggedBandit, policy: str, seed: int = 0, n_mc: int = 256,
                  **params) -> np.ndarray:
    """Action distribution of a `kernels.bandits` policy at each logged round (time order).

    The policy sees the round's context, gives its distribution, then learns the logged
    (action, reward). ``fixed`` is the uniform split (`--param` gives no weights; there are no
    user ids to hash either). The linear policies take a bias then the context, as the
    server's do (`ContextBuilder.policy_x`: a campaign without context features runs on the
    bias alone).
    """
    if params.get("holdout", 0.0) > 0.0:
        raise ValueError("--param holdout: a candidate's holdout cannot be valued from the logs "
                         "(its held-out users get no variant, and no logged decision says what "
                         "sending nothing earns); evaluate the policy without it")
    linear = policy in bandits.LINEAR
    if n_mc < 1 and policy not in ("ucb1", "egreedy", "linucb", "fixed"):
        raise ValueError(f"n_mc: {policy} needs >= 1 Monte Carlo draw for its propensities, "
                         f"got {n_mc}")
    xs = np.hstack([np.ones((len(log), 1)), log.context]) if linear else None
    state = bandits.new_state(policy, log.n_actions, xs.shape[1] if linear else 0, **params)
    rng = bandits.new_rng(seed)
    dist = np.empty((len(log), log.n_actions))
    for i in range(len(log)):
        x = xs[i] if linear else None
        if policy == "fixed":
            dist[i] = state.weights
        else:
            dist[i] = bandits.choose(state, rng, x, n_mc=n_mc).probs
        bandits.update(state, int(log.action[i]), float(log.reward[i]), x, inplace=True)
    return dist


# ---------------------------------------------------------------------------------------------
# Reward model (cross-fitted) and estimators


def _fit_predict(log: LoggedBandit, train, test, model: str) -> np.ndarray:
    """q_hat(x, a, pos) for every action on the `test` rows, fitted on the `train` rows."""
    k, npos = log.n_actions, log.n_positions
    a, p, r = log.action[train], log.position[train], log.reward[train]
    base = r.mean()
    table_n, table_s = np.zeros((npos, k)), np.zeros((npos, k))
    np.add.at(table_n, (p, a), 1.0)
    np.add.at(table_s, (p, a), r)
    act_n, act_s = table_n.sum(0), table_s.sum(0)
    by_action = (act_s + 10.0 * base) / (act_n + 10.0)
    table = (table_s + 10.0 * by_action) / (table_n + 10.0)
    q = table[log.position[test]].copy()
    if model == "table":
        return q
    if model != "linear":
        raise ValueError(f"reward model must be 'table' or 'linear', got {model!r}")
    from sklearn.linear_model import LogisticRegression, Ridge

    onehot = np.eye(npos)[log.position]
    feats = np.hstack([log.context, onehot])
    binary = np.isin(log.reward, (0.0, 1.0)).all()
    for arm in range(k):
        rows = train[log.action[train] == arm]
        if rows.size < 10 or (binary and np.unique(log.reward[rows]).size < 2):
            continue
        if binary:
            m = LogisticRegression(C=0.1, max_iter=300).fit(feats[rows], log.reward[rows])
            q[:, arm] = m.predict_proba(feats[test])[:, 1]
        else:
            q[:, arm] = Ridge(alpha=1.0).fit(feats[rows], log.reward[rows]).predict(feats[test])
    return q


def cross_fit(log: LoggedBandit, model: str = "linear", folds: int = 5, seed: int = 0,
              groups=None):
    """Out-of-fold q_hat (n, K): each round's reward model never saw that round, nor (with
    `groups`, e.g. user ids) any round of its group."""
    rng = np.random.default_rng(seed)
    if groups is None:
        fold = rng.permutation(len(log)) % folds
    else:
        _, g = np.unique(groups, return_inverse=True)
        fold = (rng.permutation(g.max() + 1) % folds)[g]
    q = np.empty((len(log), log.n_actions))
    for f in range(folds):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        q[test] = _fit_predict(log, train, test, model)
    return q


MIN_BOOT = 100
"""Fewest bootstrap resamples `estimate` takes: its percentile interval cuts 2.5% off each end."""


def _interval(terms, num, den, ci, n_boot, rng):
    """Point value and 95% interval of mean(num)/mean(den) (den None: mean(terms))."""
    n = terms.shape[0]
    if den is None:
        value = terms.mean()
        if ci == "normal":
            half = Z95 * terms.std(ddof=1) / np.sqrt(n)
            return value, value - half, value + half
        boot = [terms[idx].mean() for idx in (rng.integers(n, size=n) for _ in range(n_boot))]
    else:
        if not den.sum() > 0:  # no weight on any round (SNIPS: 0/0): undefined, not certain
            return math.nan, math.nan, math.nan
        value = num.sum() / den.sum()
        if ci == "normal":  # delta method for a ratio of means
            half = Z95 * np.std((num - value * den) / den.mean(), ddof=1) / np.sqrt(n)
            return value, value - half, value + half
        boot = []
        for _ in range(n_boot):
            idx = rng.integers(n, size=n)
            boot.append(num[idx].sum() / max(den[idx].sum(), 1e-300))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return value, float(lo), float(hi)


def _by_group(groups, terms, num, den):
    """Per-group sums (num, den) whose ratio is the estimate: rounds of one group (e.g. one
    user's several logged sends) are resampled together, not as independent rounds."""
    _, g = np.unique(groups, return_inverse=True)
    if den is None:
        num, den = terms, np.ones_like(terms)
    num, den = np.bincount(g, num), np.bincount(g, den)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0), num, den


def estimate(log: LoggedBandit, action_dist: np.ndarray, estimators=ESTIMATORS, *,
             ci: str = "normal", n_boot: int = 1000, reward_model: str = "linear",
             folds: int = 5, seed: int = 0, groups=None) -> dict:
    """Value of the policy whose action distribution on each logged round is `action_dist`.

    `groups` (optional, one label per round): the intervals treat each group's rounds as one
    unit (cluster-robust delta method / bootstrap over groups); the values do not change.

    Returns
    -------
    {name: {"value", "ci_low", "ci_high", "stderr"}} for ips / snips / dr; NaN where the
    estimate is undefined (SNIPS of a policy that never takes a logged action: 0/0), which
    ``--json`` prints as null.
    """
    if action_dist.shape != (len(log), log.n_actions):
        raise ValueError(f"action_dist must be {(len(log), log.n_actions)}, "
                         f"got {action_dist.shape}")
    if ci not in ("normal", "bootstrap"):
        raise ValueError(f"ci must be 'normal' or 'bootstrap', got {ci!r}")
    if len(log) < 2:
        raise ValueError(f"need at least 2 logged rounds for an interval, got {len(log)}")
    bad = sorted(set(estimators) - set(ESTIMATORS))
    if bad:
        raise ValueError(f"estimators must be among {', '.join(ESTIMATORS)}, got {bad}")
    if "dr" in estimators and not (isinstance(folds, (int, np.integer)) and folds >= 2):
        raise ValueError(f"folds: the doubly robust estimator needs >= 2 folds, got {folds!r}")
    if ci == "bootstrap" and n_boot < MIN_BOOT:
        raise ValueError(f"n_boot: need >= {MIN_BOOT} bootstrap resamples, got {n_boot} (a 95% "
                         "interval from fewer rests on its two or three outermost resamples)")
    if groups is not None and np.shape(groups) != (len(log),):
        raise ValueError(f"groups must have one label per round ({len(log)})")
    if groups is not None and len(np.unique(groups)) < 2:
        raise ValueError("need the rounds of at least 2 users (groups) for an interval")
    idx = np.arange(len(log))
    w = action_dist[idx, log.action] / log.pscore
    out = {}
    for name in estimators:
        if name == "ips":
            terms, num, den = w * log.reward, None, None
        elif name == "snips":
            terms, num, den = w * log.reward, w * log.reward, w
        elif name == "dr":
            q = cross_fit(log, reward_model, folds, seed, groups)
            terms = (action_dist * q).sum(1) + w * (log.reward - q[idx, log.action])
            num = den = None
        else:  # refused above
            raise AssertionError(name)
        if groups is not None:
            terms, num, den = _by_group(groups, terms, num, den)
        # each estimator resamples the same rounds (a generator from `seed` each): one that
        # equals another (IPS and SNIPS of the logging policy itself) gets the same interval
        value, lo, hi = _interval(terms, num, den, ci, n_boot, np.random.default_rng(seed))
        out[name] = {"value": float(value), "ci_low": float(lo), "ci_high": float(hi),
                     "stderr": float((hi - lo) / (2 * Z95))}
    return out


def on_policy_value(log: LoggedBandit) -> dict:
    """Mean reward of a log (its own policy's value) with a normal 95% interval (each of
    `log.groups` counted once, if given)."""
    if len(log) < 2:
        raise ValueError(f"need at least 2 logged rounds for an interval, got {len(log)}")
    terms, num, den = log.reward, None, None
    if log.groups is not None:
        if len(np.unique(log.groups)) < 2:
            raise ValueError("need the rounds of at least 2 users (groups) for an interval")
        terms, num, den = _by_group(log.groups, terms, num, den)
    m, lo, hi = _interval(terms, num, den, "normal", 0, None)
    return {"value": float(m), "ci_low": float(lo), "ci_high": float(hi)}


# ---------------------------------------------------------------------------------------------
# CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``ope`` on a `training` CLI's subparsers."""
    p = subparsers.add_parser("ope", help="off-policy evaluation (IPS, SNIPS, DR) of a policy",
                              description=__doc__.split("\n\n")[0])
    _arguments(p)
    p.set_defaults(func=run)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--logs", required=True, help="logged decisions to evaluate on")
    p.add_argument("--format", choices=("tailor", "obd"), default="tailor")
    p.add_argument("--campaign", default=None,
                   help="evaluate this campaign's decisions (needed when --logs holds several)")
    p.add_argument("--arms", type=int, default=None,
                   help="the campaign's variant count (default: the highest logged arm + 1, "
                        "too few when a variant was never chosen)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--policy", choices=bandits.POLICIES,
                       help="kernel replayed over logs (fixed: the uniform split, not a "
                            "campaign's weights)")
    group.add_argument("--target", help="log whose empirical policy is evaluated")
    p.add_argument("--target-format", choices=("tailor", "obd"), help="default: --format")
    p.add_argument("--target-campaign", default=None,
                   help="the campaign of --target's decisions (needed when it holds several)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="kernel parameter (kernels.bandits.Params field), repeatable")
    p.add_argument("--estimators", default=",".join(ESTIMATORS))
    p.add_argument("--ci", choices=("normal", "bootstrap"), default="normal")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--reward-model", choices=("table", "linear"), default="linear")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-mc", type=positive_int, default=256, help="Thompson propensity draws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Read, estimate and print; bad input prints one ``error:`` line and returns 2."""
    try:
        report = _report(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(_json_safe(report)) if args.json else format_table(report))
    return 0


def _json_safe(obj):
    """`obj` with NaN (an undefined estimate) as None: JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def _report(args: argparse.Namespace) -> dict:
    log = read_logs(args.logs, args.format, args.campaign)
    if args.arms is not None:
        if args.arms < log.n_actions:
            raise ValueError(f"--arms {args.arms}: the log holds arm {log.n_actions - 1}")
        log = dataclasses.replace(log, n_actions=args.arms)
    report = {"logs": args.logs, "n_rounds": len(log), "arms": log.n_actions,
              "logged_value": on_policy_value(log)}
    if log.skipped is not None:
        report["skipped"] = log.skipped
    if args.target:
        target = read_logs(args.target, args.target_format or args.format,
                           args.target_campaign, "--target-campaign")
        dist = empirical_policy(target, log.n_actions, log.n_positions)[log.position]
        unknown = log.position[dist.sum(1) == 0]
        if unknown.size:  # no action there: its rounds would count as reward 0, silently
            raise ValueError(f"{args.target}: no rounds at position {int(unknown[0])}, which "
                             "the evaluated logs have: the target's policy there is unknown")
        report["candidate"] = {"target": args.target}
        report["on_policy_value"] = on_policy_value(target)
    else:
        params = dict(_parse_param(kv) for kv in args.param)
        dist = replay_policy(log, args.policy, args.seed, args.n_mc, **params)
        report["candidate"] = {"policy": args.policy, "params": params}
    _check_overlap(log, dist)
    report["estimates"] = estimate(log, dist, args.estimators.split(","), ci=args.ci,
                                   n_boot=args.n_boot, reward_model=args.reward_model,
                                   folds=args.folds, seed=args.seed, groups=log.groups)
    report["unsupported_share"] = unsupported_share(log, dist)
    report["effective_rounds"] = effective_rounds(log, dist)
    return report


def _check_overlap(log: LoggedBandit, action_dist: np.ndarray) -> None:
    """Refuse a candidate that gives probability 0 to the logged arm of every round: the logs
    say nothing of its value (IPS read 0 with a zero-width interval, SNIPS 0/0, DR only its
    reward model's guess)."""
    if not action_dist[np.arange(len(log)), log.action].sum() > 0:
        taken = ", ".join(str(a) for a in np.unique(log.action))
        raise ValueError(f"no overlap: on none of the {len(log)} logged rounds does the "
                         f"candidate take the logged arm (arms {taken}): the logs cannot "
                         "value it; evaluate it on logs of a policy that tried its arms")


def unsupported_share(log: LoggedBandit, action_dist: np.ndarray) -> float:
    """Share of the candidate's choices that fall where the logs cannot value them, each valued
    as reward 0 by IPS and SNIPS (and by DR's correction), so every estimate is biased by up to
    this share of the reward scale: on a round logged with propensity 1 (a deterministic logging
    policy: ucb1, egreedy at epsilon 0) every arm but the logged one; on the other rounds the
    arms no logged round took (``--arms`` past the logged ones: a variant appended later, or
    one the logger never chose). (Other arms of rounds logged with propensity < 1 may lack
    support too; the logs cannot tell.)"""
    rows = np.arange(len(log))
    taken = action_dist[rows, log.action]
    never = np.ones(log.n_actions, bool)
    never[log.action] = False
    unlogged = action_dist[:, never].sum(axis=1)
    return float(np.where(log.pscore >= 1.0, 1.0 - taken, unlogged).sum() / len(log))


MIN_EFFECTIVE_ROUNDS = 10
"""`effective_rounds` below which the report warns that its intervals under-cover."""


def effective_rounds(log: LoggedBandit, action_dist: np.ndarray) -> float:
    """How many logged rounds the IPS and SNIPS values rest on: Kish's effective count
    (sum |t|)^2 / sum t^2 of their terms t = weight x reward, which is the number of rounds
    where the candidate takes the logged arm and the reward is not 0 when those terms are
    equal (0/1 rewards, one propensity), fewer when a few dominate. The normal (and
    bootstrap) intervals read a spread from those rounds alone: with none, IPS is 0 with the
    interval [0, 0]; with a handful they hold the true value far less often than 95%."""
    terms = action_dist[np.arange(len(log)), log.action] / log.pscore * log.reward
    square = float((terms * terms).sum())
    return float(np.abs(terms).sum() ** 2 / square) if square > 0 else 0.0


_PARAMS = tuple(f.name for f in dataclasses.fields(bandits.Params))


def _parse_param(kv: str):
    key, sep, value = kv.partition("=")
    key = key.strip()
    if not sep:
        raise ValueError(f"--param expects KEY=VALUE, got {kv!r}")
    if key not in _PARAMS:
        raise ValueError(f"--param: unknown parameter {key!r}; expected one of "
                         f"{', '.join(_PARAMS)}")
    try:
        return key, float(value)
    except ValueError:
        raise ValueError(f"--param {key}: expected a number, got {value!r}") from None


def format_table(report: dict) -> str:
    lines = [f"{'estimator':<14}{'value':>11}{'ci_low':>11}{'ci_high':>11}"]
    rows = list(report["estimates"].items())
    if "on_policy_value" in report:
        rows.append(("on-policy", report["on_policy_value"]))
    rows.append(("logged", report["logged_value"]))
    for name, r in rows:
        lines.append(f"{name:<14}{r['value']:>11.6f}{r['ci_low']:>11.6f}{r['ci_high']:>11.6f}")
    share = report.get("unsupported_share", 0.0)
    if share > 0:
        lines.append(f"warning: {share:.1%} of the candidate's choices fall on arms the logging "
                     "policy could not take (rounds logged with propensity 1) or never took "
                     "(arms no logged round has): no estimate values them, each is "
                     "biased by up to that share of the reward scale")
    rounds = report.get("effective_rounds", math.inf)
    if rounds < MIN_EFFECTIVE_ROUNDS:
        lines.append(f"warning: the estimates rest on the rewards of about {rounds:.1f} logged "
                     f"rounds (the candidate takes their arm, their reward is not 0; fewer than "
                     f"{MIN_EFFECTIVE_ROUNDS}): their 95% intervals hold the true value far less "
                     "often than 95% (a zero-width interval says nothing); log more decisions")
    skipped = report.get("skipped") or {}
    why = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in skipped.items() if n)
    return f"{report['n_rounds']} logged rounds{f' (skipped: {why})' if why else ''}, " \
        f"candidate {report['candidate']}\n" + "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ope", description=__doc__)
    _arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
