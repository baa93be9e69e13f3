import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest

from kernels.ranking import FEATURES
from training.ranker import RankerParams, fewest_trees, fit_booster, to_onnx


def _booster(objective):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] * x[:, 5] + 0.3 * rng.standard_normal(3000) > 1).astype(int)
    params = {"objective": objective, "num_leaves": 15, "verbose": -1, "num_threads": 2,
              "seed": 0}
    ds = lgb.Dataset(x, y, group=[30] * 100 if objective == "lambdarank" else None)
    return lgb.train(params, ds, 40), x


def _check(objective):
    booster, x = _booster(objective)
    model = to_onnx(booster)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["score"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["score"], {"features": x})[0].reshape(-1)
    want = booster.predict(x, raw_score=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_lambdarank_onnx_matches_lightgbm():
    _check("lambdarank")


def test_binary_onnx_score_is_the_positive_probability():
    booster, x = _booster("binary")
    sess = ort.InferenceSession(to_onnx(booster).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(["score"], {"features": x})[0]
    np.testing.assert_allclose(got.reshape(-1), booster.predict(x), rtol=1e-4, atol=1e-5)


def test_fewest_trees_takes_the_first_round_within_tolerance_of_the_best():
    curve = [0.10, 0.20, 0.298, 0.30, 0.299, 0.301]
    assert fewest_trees(curve, 0.0) == 6
    assert fewest_trees(curve, 0.01) == 3     # 0.298 >= 0.99 * 0.301
    assert fewest_trees(curve, 0.5) == 2
    with pytest.raises(ValueError):
        fewest_trees([], 0.01)
    with pytest.raises(ValueError):
        fewest_trees(curve, -0.1)


def _groups(rng, n, signal):
    """(X, y, sizes) of n groups of 20 candidates whose relevance follows column 3 with
    `signal` (retrieval's score, column 0, is noise)."""
    x = rng.standard_normal((n * 20, len(FEATURES))).astype(np.float32)
    y = (signal * x[:, 3] + rng.standard_normal(n * 20) > 1.5).astype(np.int32)
    return x, y, np.full(n, 20)


def test_the_booster_and_retrieval_are_scored_on_the_same_validation_groups():
    """`pipeline._ranker` keeps the ranker by these two figures: what the booster learns shows
    against retrieval's order (here noise), and both are `group_ndcg` of the validation part."""
    from training.metrics import group_ndcg
    rng = np.random.default_rng(1)
    parts = [_groups(rng, 400, 3.0), _groups(rng, 100, 3.0)]
    p = RankerParams(n_estimators=40, min_child_samples=20, threads=2)
    booster, info = fit_booster(parts, FEATURES, p)
    x, y, sizes = parts[1]
    assert info["valid_ndcg"] == round(group_ndcg(booster.predict(x), y, sizes), 6)
    assert info["valid_retrieval_ndcg"] == round(group_ndcg(x[:, 0], y, sizes), 6)
    assert info["valid_ndcg"] > info["valid_retrieval_ndcg"] + 0.2
