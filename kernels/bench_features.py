"""Throughput of the profile-feature update: `python -m kernels.bench_features [--quick]`.

Every figure includes what the server does per user and batch: bytes -> state (copy),
building `Events` from arrays, the update, and state -> bytes. A dict stands in for LMDB.
Layout: 12 event types, 5 channels, 64 categories, half-lives 1/7/30 d, 50 recent items.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .feature_layout import DAY, FeatureLayout, from_bytes, new_state, states_from_buffers, to_bytes
from .features import Events, update, update_many

TYPES = ("view", "click", "add_to_cart", "purchase", "email_sent", "email_open", "email_click",
         "sms_sent", "sms_click", "push_sent", "push_open", "unsubscribe")
CHANNELS = ("web", "app", "email", "sms", "push")
# Weights only decide which events touch the recent items and categories; the values do not
# change the work done.
LAYOUT = FeatureLayout(TYPES, CHANNELS, 64, {t: 1.0 for t in TYPES[:4]})


def make_stream(n: int, n_users: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1.7e9 + np.sort(rng.uniform(0, 30 * DAY, n))
    ts += rng.normal(0, 600, n) * (rng.random(n) < 0.1)  # 10 % arrive out of order
    return {
        "user": (rng.zipf(1.3, n) - 1) % n_users,
        "type": rng.choice(len(TYPES), n, p=np.r_[0.5, 0.15, 0.05, 0.03, [0.03] * 8] / 0.97),
        "channel": rng.integers(0, len(CHANNELS), n),
        "item": rng.integers(0, 5000, n),
        "category": rng.integers(-1, 64, n),
        "value": rng.uniform(5, 200, n),
        "ts": ts,
    }


def events_of(s: dict, sl) -> Events:
    return Events(s["type"][sl], s["channel"][sl], s["ts"][sl], s["item"][sl],
                  s["category"][sl], s["value"][sl])


def bench_single(s: dict, batch: int, n_events: int, use_native: bool) -> float:
    """One user's batches: load, update, store. Returns events/s."""
    raw = to_bytes(new_state(LAYOUT))
    t0 = time.perf_counter()
    for start in range(0, n_events, batch):
        state = from_bytes(LAYOUT, raw, copy=True)
        update(LAYOUT, state, events_of(s, slice(start, start + batch)), use_native=use_native)
        raw = to_bytes(state)
    return n_events / (time.perf_counter() - t0)


def bench_many(s: dict, batch: int, n_events: int, use_native: bool) -> tuple[float, float, int]:
    """Batches across users: load the touched users, update_many, store them back.

    Returns (events/s end to end, events/s of the update_many call alone, mean users/batch).
    """
    store: dict[int, bytes] = {}
    kernel_s, users = 0.0, 0
    t0 = time.perf_counter()
    for start in range(0, n_events, batch):
        sl = slice(start, start + batch)
        uniq, rows = np.unique(s["user"][sl], return_inverse=True)
        states = states_from_buffers(LAYOUT, [store.get(u) for u in uniq.tolist()])
        ev = events_of(s, sl)
        k0 = time.perf_counter()
        update_many(LAYOUT, states, rows, ev, use_native=use_native)
        kernel_s += time.perf_counter() - k0
        for u, state in zip(uniq.tolist(), states):
            store[u] = state.tobytes()
        users += len(uniq)
    total = time.perf_counter() - t0
    n_batches = -(-n_events // batch)
    return n_events / total, n_events / kernel_s, users // n_batches


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kernels.bench_features",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events (smoke run)")
    args = ap.parse_args(argv)
    n_native = 20_000 if args.quick else 200_000
    n_ref = 1_000 if args.quick else 5_000
    s = make_stream(n_native, n_users=10_000)
    print(f"layout: T={len(TYPES)} C={len(CHANNELS)} K=64 H=3 N=50 -> {LAYOUT.size} float64 "
          f"= {LAYOUT.nbytes} bytes per user")
    bench_single(s, 10, 1000, True)  # warm up
    print(f"{'scenario':<44}{'native ev/s':>14}{'reference ev/s':>16}")
    for batch in (1, 10, 100, 500):
        nat = bench_single(s, batch, min(n_native, 2000 * batch), True)
        ref = bench_single(s, batch, n_ref, False)
        print(f"{f'one user, {batch}-event batches, bytes in/out':<44}{nat:>14,.0f}{ref:>16,.0f}")
    nat, nat_kernel, users = bench_many(s, 500, n_native, True)
    ref, ref_kernel, _ = bench_many(s, 500, n_ref, False)
    print(f"{f'update_many, 500-event batches (~{users} users)':<44}{nat:>14,.0f}{ref:>16,.0f}")
    print(f"{'  of which the update_many call alone':<44}{nat_kernel:>14,.0f}{ref_kernel:>16,.0f}")


if __name__ == "__main__":
    main()
