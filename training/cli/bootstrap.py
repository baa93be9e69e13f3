"""``bootstrap``: make sure ``DATA/bundles/`` holds a valid bundle (demo data if needed)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from contract.files import PRIVATE_UMASK
from training.bundle import find_bundles, write_bundle
from training.cli.types import positive_int
from training.demo import DemoConfig, start_for_end
from training.demo_files import write_demo
from training.evaluate import format_table
from training.pipeline import TrainConfig, train
from training.readers import load

logger = logging.getLogger("tailor.training.cli.bootstrap")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bootstrap", help="train a demo bundle unless one exists")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--users", type=positive_int, default=DemoConfig().n_users,
                   help="demo world users (default %(default)s)")
    p.add_argument("--items", type=positive_int, default=DemoConfig().n_items,
                   help="demo world items (default %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    # the demo world's events and users.npz: the server's account's alone, as what it writes
    os.umask(PRIVATE_UMASK)
    data = Path(args.data_dir)
    bundles = find_bundles(data / "bundles")
    valid = [(p, m) for p, m in bundles if not isinstance(m, str)]
    for path, m in bundles:
        print(f"{path}: " + (m if isinstance(m, str) else f"valid, {m.raw['data']['n_items']} "
                             f"items, ranker {'yes' if m.ranker_file else 'no'}"))
    if valid:
        return 0
    demo = data / "demo"
    if not (demo / "interactions.csv").is_file() or not (demo / "items.csv").is_file():
        n_days = DemoConfig().n_days   # the world ends today (00:00 UTC): fresh timestamps
        write_demo(demo, DemoConfig(n_users=args.users, n_items=args.items,
                                    start=start_for_end(int(time.time()), n_days)))
    inter, catalog = load(demo / "interactions.csv", demo / "items.csv")
    result = train(inter, catalog, TrainConfig())
    print(format_table(result.metrics))
    print(write_bundle(result, data / "bundles"))
    return 0
