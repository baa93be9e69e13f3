"""Offline evaluation of send-time and channel choice in the demo world, from logged propensities.

Steps (`evaluate_timing`):

1. The demo world's contact ground truth (`training.demo_contact`) for ``n_users`` users.
2. Their history before ``now``: past sends on each channel (engaged per the truth) and their
   own engagement events, in local time, applied to real feature states (`kernels.features`).
   The population prior is fitted from those states (`kernels.contact_population`).
3. Two logs of one send per user, each made by a known uniform logging policy: the send-time
   log (email, a uniform slot of the next ``window_hours``, propensity 1/m) and the channel
   log (a uniform allowed channel, propensity 1/k; uniform slot too). Rewards are drawn from
   the truth: 1 if the send is engaged (opened; an SMS clicked).
4. Each candidate policy's action distribution on every logged round, valued by IPS and SNIPS
   (`training.ope.estimate`) with 95% intervals (normal/delta method, or bootstrap; a user's
   rounds count as one unit, `groups`): fixed
   (09:00 UTC / email for everyone), random (uniform: the logging policy), Tailor's choice
   (epsilon-greedy send time / Thompson channel, with the propensities the server would log),
   Tailor greedy (epsilon 0) and the oracle (the truth's best slot / channel). The ``truth``
   column is the exact expected value under the world's probabilities, a check on the
   estimators that only a simulation can give.

Values are engaged sends per 1,000 sends.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.events import DEFAULT_EVENT_WEIGHTS, EVENT_TYPES
from kernels import channel_choice as C
from kernels import feature_layout as FL
from kernels import features as F
from kernels import send_time as S
from kernels.contact_population import fit_population, user_hours
from training import demo_contact as D
from training.ope import LoggedBandit, estimate

__all__ = ["TimingConfig", "evaluate_timing", "format_report", "layout"]

LAYOUT_CHANNELS = ("web", "app", "email", "sms", "push")
ENGAGED_TYPE = {"email": "email_open", "sms": "sms_click", "push": "push_open"}
PAST_SENDS = np.array([16.0, 8.0, 16.0])  # mean sends per channel of D.CHANNELS over the history
ALLOWED_SHARE = np.array([1.0, 0.6, 0.7])  # share of users contactable per channel
ESTIMATORS = ("ips", "snips")


@dataclass(frozen=True)
class TimingConfig:
    """One evaluation run (defaults: the default demo world's size and seed)."""

    n_users: int = 50_000
    seed: int = 0
    now: float = 1_705_190_400.0   # the default demo world's end, 2024-01-14 00:00 UTC
    history_days: int = 56
    window_hours: int = 24
    rounds: int = 4
    """Logged sends per user and experiment (one a week, same state: the history before now)."""
    fixed_utc_hour: int = 9
    epsilon: float = 0.1
    n_mc: int = 256
    ci: str = "normal"
    n_boot: int = 1000


def layout() -> FL.FeatureLayout:
    """The feature layout of the simulated profiles (the server's vocabularies)."""
    return FL.FeatureLayout(EVENT_TYPES, LAYOUT_CHANNELS, 1, DEFAULT_EVENT_WEIGHTS,
                            half_lives_s=(FL.DAY, 7 * FL.DAY, 30 * FL.DAY), recent_capacity=1)


def _history(truth: D.ContactTruth, lay, cfg: TimingConfig, rng) -> np.ndarray:
    """Feature states [n, size] after the simulated history."""
    start, n = cfg.now - cfg.history_days * 86400.0, len(truth)
    users, ts = D.engagement_times(truth, rng, start, cfg.now)
    parts = [(users, ts, np.full(users.shape[0], lay.type_code("click")),
              np.full(users.shape[0], lay.channel_code("web")))]
    for c, name in enumerate(D.CHANNELS):
        who = np.repeat(np.arange(n), rng.poisson(PAST_SENDS[c], n))
        sent = start + rng.random(who.shape[0]) * (cfg.now - start - 3600.0)
        engaged = rng.random(who.shape[0]) < D.open_probability(truth, who, c, sent)
        code = lay.channel_code(name)
        parts.append((who, sent, np.full(who.shape[0], lay.type_code(f"{name}_sent")),
                      np.full(who.shape[0], code)))
        parts.append((who[engaged], sent[engaged] + 60.0,
                      np.full(engaged.sum(), lay.type_code(ENGAGED_TYPE[name])),
                      np.full(engaged.sum(), code)))
    who, when, kind, chan = (np.concatenate(x) for x in zip(*parts))
    order = np.lexsort((when, who))
    states = FL.new_states(lay, n)
    F.update_many(lay, states, who[order],
                  F.Events(kind[order], chan[order], when[order],
                           tz_offset_min=truth.tz_offset_min[who[order]]))
    return states


def _log(action, pscore, reward, n_actions) -> LoggedBandit:
    n = action.shape[0]
    return LoggedBandit(action.astype(np.int64), np.zeros(n, np.int64),
                        reward.astype(np.float64), pscore.astype(np.float64),
                        np.zeros((n, 0)), int(n_actions), 1)


def _onehot(index, shape) -> np.ndarray:
    out = np.zeros(shape)
    out[np.arange(shape[0]), index] = 1.0
    return out


def _value(log, dist, truth_p, users, cfg: TimingConfig) -> dict:
    est = estimate(log, dist, ESTIMATORS, ci=cfg.ci, n_boot=cfg.n_boot, seed=cfg.seed,
                   groups=users)
    row = {k: {m: 1000.0 * v[m] for m in ("value", "ci_low", "ci_high")} for k, v in est.items()}
    row["truth"] = 1000.0 * float((dist * truth_p).sum(axis=1).mean())
    return row


def _rounds(truth, cfg: TimingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(user, window start) of every logged send: each user once a week for `rounds` weeks."""
    users = np.tile(np.arange(len(truth)), cfg.rounds)
    return users, cfg.now + 7 * 86400.0 * np.repeat(np.arange(cfg.rounds), len(truth))


def _send_time(truth, lay, states, pop, cfg: TimingConfig, rng) -> dict:
    users, start = _rounds(truth, cfg)
    n = users.shape[0]
    cand = S.slots(start, start + cfg.window_hours * 3600.0, truth.tz_offset_min[users])
    m = cand.valid.sum(axis=1)
    slot = np.floor(rng.random(n) * m).astype(np.int64)
    true_p = np.where(cand.valid, D.open_probability(truth, users[:, None], 0, cand.at), 0.0)
    reward = rng.random(n) < true_p[np.arange(n), slot]
    log = _log(slot, 1.0 / m, reward, cand.at.shape[1])
    hist = user_hours(lay, states, cfg.now)[0][users]
    fixed_at = (np.floor(start / 86400.0) * 86400.0 + cfg.fixed_utc_hour * 3600.0)
    fixed_at += 86400.0 * (fixed_at < start)
    if not (fixed_at < start + cfg.window_hours * 3600.0).all():
        raise ValueError(f"window_hours: {cfg.window_hours} hours from each window's start "
                         f"do not reach the fixed policy's {cfg.fixed_utc_hour:02d}:00 UTC "
                         "send (the windows open at 00:00 UTC)")
    fixed_at = fixed_at[:, None]
    fixed = ((cand.at <= fixed_at) & cand.valid).sum(axis=1) - 1
    policies = {
        "fixed": _onehot(fixed, cand.at.shape),
        "random": cand.valid / m[:, None],
        "tailor": S.slot_probs(hist, cand, pop, cfg.epsilon)[1],
        "tailor greedy": S.slot_probs(hist, cand, pop, 0.0)[1],
        "oracle": _onehot(np.argmax(true_p, axis=1), cand.at.shape),
    }
    return {name: _value(log, dist, true_p, users, cfg) for name, dist in policies.items()}


def _channel(truth, lay, states, pop, cfg: TimingConfig, rng) -> dict:
    k = len(D.CHANNELS)
    allowed = rng.random((len(truth), k)) < ALLOWED_SHARE[None, :]
    allowed[:, 0] = True
    users, start = _rounds(truth, cfg)
    n, allowed = users.shape[0], allowed[users]
    count = allowed.sum(axis=1)
    pick = np.floor(rng.random(n) * count).astype(np.int64)
    action = np.argmax(np.cumsum(allowed, axis=1) > pick[:, None], axis=1)
    at = start + np.floor(rng.random(n) * cfg.window_hours) * 3600.0
    true_p = np.where(allowed, D.open_probability(truth, users[:, None],
                                                  np.arange(k)[None, :], at[:, None]), 0.0)
    reward = rng.random(n) < true_p[np.arange(n), action]
    log = _log(action, 1.0 / count, reward, k)
    cols = [pop.channels.index(c) for c in D.CHANNELS]
    a, b = (x[users][:, cols] for x in C.posteriors(lay, states, cfg.now, pop))
    probs = np.concatenate([C.thompson(a[i:i + 20_000], b[i:i + 20_000],
                                       allowed[i:i + 20_000], rng, cfg.n_mc)[1]
                            for i in range(0, n, 20_000)])
    mean = a / (a + b)
    rate = np.where(allowed, truth.channel_rate[users], -1.0)
    policies = {
        "fixed": _onehot(np.zeros(n, np.int64), (n, k)),
        "random": allowed / count[:, None],
        "tailor": probs,
        "tailor greedy": _onehot(np.argmax(np.where(allowed, mean, -1.0), axis=1),
                                 (n, k)),
        "oracle": _onehot(np.argmax(rate, axis=1), (n, k)),
    }
    return {name: _value(log, dist, true_p, users, cfg) for name, dist in policies.items()}


def evaluate_timing(cfg: TimingConfig = TimingConfig()) -> dict:
    """Run the evaluation; returns {"send_time": {policy: row}, "channel": {...}, "prior": ...}
    with rows {"ips": {value, ci_low, ci_high}, "snips": {...}, "truth": float}."""
    truth = D.contact_truth(cfg.n_users, cfg.seed)
    lay = layout()
    rng = np.random.default_rng([cfg.seed, 4])
    states = _history(truth, lay, cfg, rng)
    pop = fit_population(lay, states, cfg.now)
    return {"n_users": cfg.n_users, "rounds": cfg.rounds,
            "prior": {"hour_alpha": pop.hour_alpha,
                      "channel_a": dict(zip(pop.channels, pop.channel_a.round(3).tolist())),
                      "channel_b": dict(zip(pop.channels, pop.channel_b.round(3).tolist()))},
            "send_time": _send_time(truth, lay, states, pop, cfg, rng),
            "channel": _channel(truth, lay, states, pop, cfg, rng)}


def beats(rows: dict, estimator: str = "snips", winner: str = "tailor",
          losers=("fixed", "random")) -> bool:
    """`winner`'s interval lies above every one of `losers`' intervals."""
    return all(rows[winner][estimator]["ci_low"] > rows[x][estimator]["ci_high"] for x in losers)


def format_report(report: dict) -> str:
    lines = [f"{report['n_users']} users x {report['rounds']} logged sends per experiment "
             f"(uniform logging policy); engaged sends per 1,000 with 95% intervals; "
             f"prior: {report['prior']}"]
    undefined = False
    for part in ("send_time", "channel"):
        lines.append(f"\n{part.replace('_', ' ')}: {'policy':<14}{'IPS':>24}{'SNIPS':>24}"
                     f"{'truth':>8}")
        for name, row in report[part].items():
            cells = "".join(_cell(r) for r in (row["ips"], row["snips"]))
            undefined |= "n/a" in cells
            lines.append(f"{'':<11}{name:<14}{cells}{row['truth']:>8.1f}")
        lines.append(f"{'':<11}tailor above fixed and random (SNIPS intervals disjoint): "
                     f"{'yes' if beats(report[part]) else 'NO'}")
    sends = report["n_users"] * report["rounds"]
    if undefined:
        lines.append("\nn/a: no logged send took an action the policy would take (SNIPS divides "
                     "by their weight, here 0)")
    if sends < MIN_SENDS:
        lines.append(f"\nonly {sends} logged sends per experiment: intervals this small a sample "
                     f"gives are not to be trusted (use {MIN_SENDS:,} or more)")
    return "\n".join(lines)


MIN_SENDS = 1000
"""Logged sends per experiment below which the report warns that its intervals mean little."""


def _cell(r: dict) -> str:
    if not np.isfinite(r["value"]):
        return f"{'n/a':>24}"
    return f"{r['value']:>8.1f} [{r['ci_low']:6.1f},{r['ci_high']:6.1f}]"
