"""``demo-data``: write the deterministic demo world."""
from __future__ import annotations

from training.demo import DemoConfig, write_demo

_DEFAULT = DemoConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo-data", help="generate the seeded demo world")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--users", type=int, default=_DEFAULT.n_users)
    p.add_argument("--items", type=int, default=_DEFAULT.n_items)
    p.add_argument("--days", type=int, default=_DEFAULT.n_days)
    p.add_argument("--seed", type=int, default=_DEFAULT.seed)
    p.set_defaults(func=run)


def run(args) -> int:
    info = write_demo(args.out, DemoConfig(n_users=args.users, n_items=args.items,
                                           n_days=args.days, seed=args.seed))
    print(f"wrote {info['n_rows']} interactions to {info['interactions']}")
    print(f"wrote {info['items']} and {info['ground_truth']}")
    return 0
