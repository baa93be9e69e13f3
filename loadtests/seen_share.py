"""Share of already-seen items in bundle users' top-10, by event type (issue 21).

    python -m loadtests.seen_share --bundle B --data D [--users 300]

Starts `python -m server` with bundle B (trained on the demo data in D) and asks Recommend
k=10 for the first `--users` bundle users; prints, per event type, the share of the returned
items the user had such an event on (any time, held-out rows included), and any type at all;
`type*` counts only items outside the repeatable categories.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import grpc
import numpy as np

from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc

from .bench import serving
from .interest_shift import _demo


def measure(target: str, data: Path, bundle: Path, n_users: int,
            repeatable: frozenset[str]) -> dict[str, float]:
    by_user, category, _ = _demo(data)
    with np.load(bundle / "users.npz") as npz:
        users = [str(u) for u in npz["user_ids"][:n_users]]
    hits, total = defaultdict(int), 0
    with grpc.insecure_channel(target) as ch:
        recs = rpb_grpc.RecommendationServiceStub(ch)
        for u in users:
            got = [i.item_id for i in recs.Recommend(rpb.RecommendRequest(user_id=u, k=10)).items]
            kinds = defaultdict(set)
            for item, _, kind, _ in by_user[u]:
                kinds[kind].add(item)
                kinds["any"].add(item)
                if category[item] not in repeatable:
                    kinds[f"{kind}*"].add(item)
            for kind, items in kinds.items():
                hits[kind] += sum(i in items for i in got)
            total += len(got)
    return {k: v / total for k, v in sorted(hits.items())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.seen_share", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--repeatable", nargs="*", default=["grocery"],
                   help="categories counted apart (type*: items outside them)")
    args = p.parse_args(argv)
    with serving(args.bundle, prefix="seen-share-") as served:
        shares = measure(served.target, args.data, args.bundle, args.users,
                         frozenset(args.repeatable))
    print(f"share of top-10 items the user had an event of this type on ({args.users} users)")
    for kind, share in shares.items():
        print(f"{kind:>12}: {share:.3f}")


if __name__ == "__main__":
    main()
