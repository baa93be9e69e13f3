"""The same user, stored state and bundle get the same Recommend answer, bit for bit, whichever
path serves it: a user's first call (an encode) or a later one (the user cache), either worker
of `--workers 2`, alone or in a batch with other users, and another server process on the same
bundle and the same events (`server.recommend.handler.decay_clock`)."""
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from clients import TailorClient
from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from server.recommend.handler import CLOCK_PHASES, decay_clock

STEP = 86_400
"""The decay clock's step in these servers: no user's step ends while the test runs (with the
default hour, one group's ends every 225 s)."""


def _people(bundle) -> tuple[list[str], list[str], list[dict], list[dict]]:
    """(the users compared: bundle users, two of them with live events, and two users known only
    by their events; other bundle users to batch them with; those events; what each is asked:
    k 10 and 50, and k 10 in one category, scored by numpy rather than FAISS)."""
    with np.load(bundle / "users.npz") as users, np.load(bundle / "items.npz") as items:
        ids, item_ids = [str(u) for u in users["user_ids"][:40]], items["item_ids"]
        asks = [{"k": 10}, {"k": 50}, {"k": 10, "categories": [str(items["category_names"][0])]}]
    t0 = time.time() - 900
    events = [{"event_id": f"e{n}-{u}", "user_id": u, "type": kind,
               "item_id": str(item_ids[(7 * n + len(u)) % len(item_ids)]), "timestamp": t0 + 60 * n}
              for u in (ids[0], ids[1], "live-only-1", "live-only-2")
              for n, kind in enumerate(("view", "click", "view", "add_to_cart"))]
    return ids[:24] + ["live-only-1", "live-only-2"], ids[24:], events, asks


def _bits(reply) -> tuple:
    return tuple((i.item_id, struct.pack("<ff", i.score, i.retrieval_score)) for i in reply.items)


def _one_by_one(target: str, users: list[str], asks: list[dict], threads: int = 1) -> dict:
    """Each (user, ask) on its own connection (`--workers 2` spreads them over its workers),
    `threads` at a time (concurrent calls share the server's batches)."""
    def ask(key):
        with grpc.insecure_channel(target) as channel:
            reply = pb_grpc.RecommendationServiceStub(channel).Recommend(
                pb.RecommendRequest(user_id=key[0], **asks[key[1]]), timeout=30)
        return key, _bits(reply)
    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(ask, [(u, a) for u in users for a in range(len(asks))]))


def _in_one_batch(target: str, users: list[str], others: list[str], asks: list[dict]) -> dict:
    keys = [(u, a) for u in users + others for a in range(len(asks))]
    order = np.random.default_rng(0).permutation(len(keys))
    with grpc.insecure_channel(target) as channel:
        reply = pb_grpc.RecommendationServiceStub(channel).RecommendBatch(pb.RecommendBatchRequest(
            requests=[pb.RecommendRequest(user_id=keys[i][0], **asks[keys[i][1]]) for i in order]),
            timeout=30)
    return {keys[i]: _bits(r) for i, r in zip(order, reply.responses) if keys[i][0] in users}


def _serve(server_process, tmp_path, name: str, bundle, workers: int, events: list[dict]):
    server = server_process(tmp_path / name, bundle=bundle, workers=workers,
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / f"{name}-secrets"),
                                 "TAILOR_HISTORY_CLOCK_SECONDS": str(STEP)})
    with TailorClient(server.target, timeout=30) as client:
        assert client.track_batch(events).accepted == len(events)
    return server


def test_each_users_clock_steps_at_its_own_phase():
    users = [f"u{n}" for n in range(400)]
    now = 1_765_000_000.5
    clocks = [decay_clock(now, 300, u) for u in users]
    assert all(now - 300 < c <= now for c in clocks)
    assert len({c % 300 for c in clocks}) == CLOCK_PHASES  # steps end at 16 times, not one
    assert [decay_clock(c + 299.9, 300, u) for c, u in zip(clocks, users)] == clocks
    assert all(decay_clock(c + 300, 300, u) == c + 300 for c, u in zip(clocks, users))


def test_every_path_and_process_gives_the_same_bits(server_process, tmp_path, demo_bundle):
    every = STEP / CLOCK_PHASES  # some user's step ends this often
    if every - time.time() % every < 30:  # one would end during the test: wait for it
        time.sleep(every - time.time() % every)
    users, others, events, asks = _people(demo_bundle)
    first = _serve(server_process, tmp_path, "a", demo_bundle, 2, events)
    answers = {"first calls, 2 workers": _one_by_one(first.target, users, asks)}
    time.sleep(1.0)  # the clock moves on: a weight decayed to now differs in its last bits
    answers["again, 2 workers"] = _one_by_one(first.target, users, asks)
    answers["one batch with others"] = _in_one_batch(first.target, users, others, asks)
    second = _serve(server_process, tmp_path, "b", demo_bundle, 1, events)
    answers["another process, concurrent"] = _one_by_one(second.target, users, asks, threads=6)
    answers["another process, cached"] = _one_by_one(second.target, users, asks)
    expected = answers.pop("first calls, 2 workers")
    assert all(len(expected[u, 0]) == 10 and len(expected[u, 2]) == 10 for u in users)
    for path, got in answers.items():
        differ = sorted({u for u, k in expected if got[u, k] != expected[u, k]})
        assert not differ, f"{path}: {len(differ)} of {len(users)} users answered otherwise"
