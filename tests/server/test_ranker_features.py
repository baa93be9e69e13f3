"""Per-bundle ranker features: the server hands each bundle's ranker the features its manifest
lists, in its order, so a bundle trained before a feature was added keeps serving (issue 19)."""
import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernels.ranking import FEATURES
from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from server.models import BundleInvalid, load_bundle

OLDER = list(FEATURES[:-1])  # as if trained before the last feature (log_history_len) existed
SHUFFLED = ["log_price", "retrieval_score", "retrieval_rank", "log_popularity"]


def _linear_ranker(n_features: int, column: int) -> onnx.ModelProto:
    """score [N, 1] = features[:, column]: a ranker whose scores show which column it read."""
    w = np.zeros((n_features, 1), np.float32)
    w[column] = 1.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["score"])], "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _with_ranker(src, dst, features: list[str], column: int):
    """A copy of bundle `src` whose ranker reads `features` and scores by `features[column]`."""
    import shutil
    shutil.copytree(src, dst)
    onnx.save(_linear_ranker(len(features), column), str(dst / "ranker.onnx"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["ranker"]["features"] = features
    manifest["files"]["ranker.onnx"] = hashlib.sha256((dst / "ranker.onnx").read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(params=[OLDER, SHUFFLED], ids=["older-set", "shuffled-subset"])
def features(request):
    return request.param


@pytest.fixture
def settings(settings, demo_bundle, tmp_path, features):
    bundle = _with_ranker(demo_bundle, tmp_path / "bundles" / demo_bundle.name, features,
                          features.index("log_price"))
    return settings.model_copy(update={"bundle": bundle})


async def test_a_bundle_with_another_feature_list_is_served_with_its_own_features(
        channel, demo_bundle, features):
    with np.load(demo_bundle / "users.npz") as npz:
        user = str(npz["user_ids"][int(np.argmax(np.diff(npz["indptr"])))])
    with np.load(demo_bundle / "items.npz") as npz:
        log_price = dict(zip(npz["item_ids"].tolist(), np.log1p(npz["price"].astype(np.float64))))
    stub = pb_grpc.RecommendationServiceStub(channel)
    reply = await stub.Recommend(pb.RecommendRequest(user_id=user, k=10))
    assert not reply.cold_start and len(reply.items) == 10
    scores = [i.score for i in reply.items]
    # the ranker scored by log_price: only right if it got the column its manifest names
    assert scores == pytest.approx([log_price[i.item_id] for i in reply.items], rel=1e-5)
    assert scores == sorted(scores, reverse=True)


def test_a_feature_this_server_does_not_compute_is_refused_by_name(demo_bundle, tmp_path):
    bundle = _with_ranker(demo_bundle, tmp_path / "b", ["log_price", "channel_affinity"], 0)
    with pytest.raises(BundleInvalid, match="channel_affinity"):
        load_bundle(bundle)
