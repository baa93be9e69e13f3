"""How far a few clicks in a new category move a user's recommendations (issue 21).

    python -m loadtests.interest_shift --bundle B --data D [--users 20]

Starts `python -m server` with bundle B (trained on the demo data in D), then for each of
three kinds of user clicks 1, 2, 4 and 8 popular items of a category the user never touched
and prints the share of that category in the top-20 after each step:

- `bundle`:    a user known to the bundle, no live events (history as old as the demo data);
- `recent`:    a new user id whose demo events are replayed so the latest was an hour ago;
- `returning`: the same replayed so the latest was 90 days ago.

Users are the first ones with at least 20 distinct items in the demo data. Only gRPC and the
demo CSVs are used.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import grpc
import numpy as np
import pyarrow.csv as pacsv

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc

from .bench import serving

CLICKS = (1, 2, 4, 8)
DAY = 86400.0


def _demo(data: Path):
    opts = pacsv.ConvertOptions(column_types={"user_id": "string", "item_id": "string", "id": "string"})
    ev = pacsv.read_csv(data / "interactions.csv", convert_options=opts).to_pydict()
    items = pacsv.read_csv(data / "items.csv", convert_options=opts).to_pydict()
    category = dict(zip(items["id"], items["category"]))
    pop = defaultdict(int)
    by_user = defaultdict(list)
    for u, i, ts, kind, value in zip(ev["user_id"], ev["item_id"], ev["timestamp"], ev["event"], ev["value"]):
        by_user[u].append((i, int(ts), kind, float(value)))
        pop[i] += 1
    return by_user, category, pop


def _new_category(history, category, pop) -> tuple[str, list[str]]:
    """The largest category the user never touched, and its items by popularity."""
    touched = {category[i] for i, *_ in history}
    members = defaultdict(list)
    for item, cat in category.items():
        members[cat].append(item)
    free = sorted((c for c in members if c not in touched), key=lambda c: -len(members[c]))
    cat = free[0]
    return cat, sorted(members[cat], key=lambda i: -pop[i])


def _track(stub, user, events, tag):
    msgs = [ppb.Event(event_id=f"{tag}-{n}", user_id=user, type=kind, item_id=item,
                      value=value, timestamp=ts) for n, (item, ts, kind, value) in enumerate(events)]
    for s in range(0, len(msgs), 500):
        stub.TrackEvents(ppb.TrackEventsRequest(events=msgs[s:s + 500]))


def _share(recs, user, cat, k=20) -> float:
    reply = recs.Recommend(rpb.RecommendRequest(user_id=user, k=k))
    return sum(i.category == cat for i in reply.items) / max(len(reply.items), 1)


def measure(target: str, data: Path, n_users: int) -> dict[str, np.ndarray]:
    by_user, category, pop = _demo(data)
    chosen = [u for u in sorted(by_user, key=int) if len({i for i, *_ in by_user[u]}) >= 20][:n_users]
    out = {}
    with grpc.insecure_channel(target) as ch:
        prof, recs = ppb_grpc.ProfileServiceStub(ch), rpb_grpc.RecommendationServiceStub(ch)
        for kind, gap in (("bundle", None), ("recent", 3600.0), ("returning", 90 * DAY)):
            rows = []
            for u in chosen:
                user, now = (u if gap is None else f"{kind}-{u}"), time.time()
                if gap is not None:
                    shift = now - gap - max(ts for _, ts, _, _ in by_user[u])
                    _track(prof, user, [(i, ts + shift, k, v) for i, ts, k, v in by_user[u]], f"{kind}-{u}")
                cat, items = _new_category(by_user[u], category, pop)
                shares, done = [], 0
                for n in CLICKS:
                    _track(prof, user, [(i, time.time() - 1, "click", 0.0) for i in items[done:n]],
                           f"{kind}-{u}-c{n}")
                    done = n
                    shares.append(_share(recs, user, cat))
                rows.append(shares)
            out[kind] = np.asarray(rows)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.interest_shift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="demo data the bundle was trained on")
    p.add_argument("--users", type=int, default=20)
    args = p.parse_args(argv)
    with serving(args.bundle, prefix="interest-") as served:
        result = measure(served.target, args.data, args.users)
    print(f"share of the new category in the top-20 ({args.users} users, mean [min..max])")
    print(f"{'user':>10} " + " ".join(f"{n:>2} click{'s' if n > 1 else ' '}        " for n in CLICKS))
    for kind, rows in result.items():
        cells = [f"{rows[:, j].mean():5.2f} [{rows[:, j].min():.2f}..{rows[:, j].max():.2f}]"
                 for j in range(len(CLICKS))]
        print(f"{kind:>10} " + "  ".join(cells))


if __name__ == "__main__":
    main()
