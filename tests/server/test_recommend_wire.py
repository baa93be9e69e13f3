"""Recommend answers assembled from pre-serialized items parse as the message-built ones."""
import numpy as np

from protos.tailor.v1 import recommendation_pb2 as pb
from server.recommend import RecQuery
from server.services.recommend_wire import batch_bytes, response_bytes
from server.services.recommendation import RecommendConverter


def _trained_users(demo_bundle, n: int) -> list[str]:
    """Ids of the bundle's users (training's output: the server's copy holds keyed hashes)."""
    with np.load(demo_bundle / "users.npz") as npz:
        return [str(u) for u in npz["user_ids"][:n]]


def test_bytes_parse_as_the_message_built_answer(tailor_server, demo_bundle):
    bundle = tailor_server.registry.current()
    users = _trained_users(demo_bundle, 30)
    queries = [RecQuery(u, 7) for u in users] + [RecQuery("never-seen", 5, categories=(
        bundle.items["category_names"][0],))]
    results = tailor_server.recommender._run_batch(queries)
    assert results[-1].cold_start and not results[0].cold_start
    for i, res in enumerate(results):
        built = RecommendConverter.from_result(res, f"req-{i}" if i % 2 else "")
        wire = pb.RecommendResponse.FromString(response_bytes(res, f"req-{i}" if i % 2 else ""))
        assert wire == built and len(wire.items) == len(res.rows)
    again = pb.RecommendResponse.FromString(response_bytes(results[0]))  # rows now cached
    assert [it.item_id for it in again.items] == bundle.items["item_ids"][results[0].rows].tolist()
    assert np.allclose([it.score for it in again.items], results[0].scores)


def test_batch_bytes_hold_each_response(tailor_server, demo_bundle):
    results = tailor_server.recommender._run_batch([RecQuery(u, 3)
                                                    for u in _trained_users(demo_bundle, 3)])
    parsed = pb.RecommendBatchResponse.FromString(batch_bytes([response_bytes(r, "x") for r in results]))
    assert list(parsed.responses) == [RecommendConverter.from_result(r, "x") for r in results]
