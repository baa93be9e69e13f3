"""CPU cost of the live seen-set on event ingestion, in process (issue 21).

    python -m loadtests.bench_seen_ingest [--users 2000] [--items 20000] [--batches 40]

Writes 500-event batches (view/click/add_to_cart/purchase on random items of random users)
through `ProfileRepository.write_events` into a fresh LMDB store (no fsync), after as many
warm-up batches so users have seen-sets, and prints process CPU per event: the whole write,
and the part spent merging seen records (timed around `seen.merge_updates`). In a checkout
without seen records only the whole write is printed.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from server.profiles.events import TrackedEvent
from server.profiles.records import EventRecords
from server.profiles.repository import ProfileRepository
from server.profiles.schema import ProfileSchema
from server.store import Store

from .measure import positive

try:
    from server.profiles import seen
except ImportError:  # before issue 21
    seen = None

TYPES = ("view", "click", "add_to_cart", "purchase")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_seen_ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=positive(int), default=2000)
    p.add_argument("--items", type=positive(int), default=20000)
    p.add_argument("--batches", type=positive(int), default=40)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seen-ingest-") as folder:
        run(args, folder)


def run(args, folder: str) -> None:
    """The measurement, in a store under `folder` (removed by the caller)."""
    rng, now = np.random.default_rng(0), time.time()
    store = Store(folder, sync=False)
    repo = ProfileRepository(store, ProfileSchema().layout())

    def batch(b: int) -> EventRecords:
        events = [TrackedEvent(f"b{b}-{n}", f"u{rng.integers(args.users)}", TYPES[rng.integers(4)],
                               "web", "", f"item-{rng.integers(args.items)}", 0.0, now - 1000 + n)
                  for n in range(500)]
        return EventRecords.build(events, [None] * 500)

    for b in range(args.batches):
        repo.write_events(batch(b))
    spent = [0.0]
    if seen is not None:
        merge = seen.merge_updates

        def timed(*a):
            t = time.process_time()
            out = merge(*a)
            spent[0] += time.process_time() - t
            return out
        seen.merge_updates = timed
    total = 0.0
    for b in range(args.batches, 2 * args.batches):
        records = batch(b)
        t = time.process_time()
        repo.write_events(records)
        total += time.process_time() - t
    n = args.batches * 500
    line = f"ingest CPU {total / n * 1e6:.1f} us/event"
    if seen is not None:
        line += f", of which the seen-set merge {spent[0] / n * 1e6:.1f} us/event"
    print(line)
    store.close()


if __name__ == "__main__":
    main()
