import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest

from kernels.ranking import FEATURES
from training.ranker import fewest_trees, to_onnx


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
