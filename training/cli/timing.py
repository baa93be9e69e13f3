"""``evaluate-timing``: send-time and channel choice against fixed, random and the oracle."""
from __future__ import annotations

import json

from training.cli.types import count, positive_int, resamples, share, window_hours
from training.ope import _json_safe
from training.timing import TimingConfig, beats, evaluate_timing, format_report

_DEFAULT = TimingConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-timing", help="offline evaluation of send-time and channel choice (demo world)",
        description="Simulate logged sends with a uniform logging policy in the demo world and "
                    "report engaged sends per 1,000 (IPS, SNIPS, 95% intervals) for fixed, "
                    "random, Tailor's choice and the oracle.")
    p.add_argument("--users", type=positive_int, default=_DEFAULT.n_users)
    p.add_argument("--seed", type=count, default=_DEFAULT.seed)
    p.add_argument("--rounds", type=positive_int, default=_DEFAULT.rounds,
                   help="logged sends per user and experiment")
    p.add_argument("--window-hours", type=window_hours, default=_DEFAULT.window_hours,
                   help="send window of each logged send, from 00:00 UTC (10 to 168: it "
                        "must hold the fixed policy's 09:00 UTC send)")
    p.add_argument("--history-days", type=positive_int, default=_DEFAULT.history_days)
    p.add_argument("--epsilon", type=share, default=_DEFAULT.epsilon,
                   help="send-time exploration share, in [0, 1]")
    p.add_argument("--n-mc", type=positive_int, default=_DEFAULT.n_mc, help="Thompson propensity draws")
    p.add_argument("--ci", choices=("normal", "bootstrap"), default=_DEFAULT.ci)
    p.add_argument("--n-boot", type=resamples, default=_DEFAULT.n_boot,
                   help="bootstrap resamples (--ci bootstrap), at least 100")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = TimingConfig(n_users=args.users, seed=args.seed, rounds=args.rounds,
                       window_hours=args.window_hours, history_days=args.history_days,
                       epsilon=args.epsilon, n_mc=args.n_mc, ci=args.ci, n_boot=args.n_boot)
    report = evaluate_timing(cfg)
    print(json.dumps(_json_safe(report)) if args.json else format_report(report))  # NaN: null
    return 0 if beats(report["send_time"]) and beats(report["channel"]) else 1
