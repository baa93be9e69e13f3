"""``demo-data``: write the deterministic demo world."""
from __future__ import annotations

import argparse
from datetime import UTC, datetime

from training.cli.types import count, nonnegative_number, positive_int, positive_number
from training.demo import DemoConfig, start_for_end
from training.demo_files import write_demo
from training.readers import MAX_TIMESTAMP

_DEFAULT = DemoConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo-data", help="generate the seeded demo world")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--users", type=positive_int, default=_DEFAULT.n_users,
                   help="users (default %(default)s)")
    p.add_argument("--items", type=positive_int, default=_DEFAULT.n_items,
                   help="catalog items (default %(default)s)")
    p.add_argument("--days", type=positive_int, default=_DEFAULT.n_days,
                   help="days of activity (default %(default)s)")
    p.add_argument("--seed", type=count, default=_DEFAULT.seed,
                   help="random seed: the same seed and sizes give the same files (default "
                        "%(default)s)")
    p.add_argument("--events-per-user", type=positive_number,
                   help="mean rows per user (e.g. 120 for long histories); default: about 60")
    p.add_argument("--end", type=parse_date,
                   help="the world's last day is this UTC date (YYYY-MM-DD; sessions start "
                        "before its end, a late funnel may spill over by minutes); default: "
                        "a fixed date, so the output is deterministic")
    p.add_argument("--contact-truth", action="store_true",
                   help="also write contact_truth.npz (time zones, preferred hours and channels "
                        "per user; the other files are unchanged)")
    p.add_argument("--context-tastes", type=nonnegative_number, default=0.0, metavar="STRENGTH",
                   help="tastes depend on channel and time of week with this strength (e.g. 1.0; "
                        "adds a channel column); default 0: the default world")
    p.add_argument("--impressions-per-user", type=nonnegative_number, default=0.0, metavar="R",
                   help="with --context-tastes: also write impressions.jsonl, a context-blind "
                        "model's log of about R requests per user with clicks drawn from the "
                        "world's context tastes (training.demo_impressions; the clicks join "
                        "interactions.csv); default 0: none")
    p.set_defaults(func=run)


def parse_date(text: str) -> int:
    """Unix seconds of the end of the UTC day ``text`` (ISO date or date-time), a day before
    the year 3000 at the latest: a later world (a late funnel spills past the day) has times
    `training.readers` takes for milliseconds and refuses."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    end = int(when.timestamp()) // 86_400 * 86_400 + 86_400
    if end > MAX_TIMESTAMP - 86_400:
        raise argparse.ArgumentTypeError(f"expected a date before 2999-12-31 (train refuses "
                                         f"times after the year 3000), got {text!r}")
    return end


def config_from_args(args) -> DemoConfig:
    start = _DEFAULT.start if args.end is None else start_for_end(args.end, args.days)
    return DemoConfig(n_users=args.users, n_items=args.items, n_days=args.days, seed=args.seed,
                      start=start, events_per_user=args.events_per_user)


def run(args) -> int:
    if args.impressions_per_user > 0 and args.context_tastes <= 0:
        print("--impressions-per-user needs --context-tastes STRENGTH > 0")
        return 2
    config = config_from_args(args)
    if config.start + (config.n_days + 1) * 86_400 > MAX_TIMESTAMP:   # a late funnel spills over
        raise ValueError(f"--days {args.days}: the world would end after the year 3000, whose "
                         "times train refuses (milliseconds?); fewer days, or an earlier --end")
    info = write_demo(args.out, config, contact=args.contact_truth,
                      context_tastes=args.context_tastes,
                      impressions_per_user=args.impressions_per_user)
    print(f"wrote {info['n_rows']} interactions to {info['interactions']}")
    print(f"wrote {info['items']} and {info['ground_truth']}")
    if "impressions" in info:
        print(f"wrote {info['n_impressions']} impressions to {info['impressions']}")
    if "contact_truth" in info:
        print(f"wrote {info['contact_truth']}")
    return 0
