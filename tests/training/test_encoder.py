import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from training.als import ALSParams, aggregate, confidence, fit_als, histories
from training.encoder import build_encoder, fold_in, gram, pad_histories, solve_exact

D, N, L, REG, ALPHA = 24, 300, 16, 0.5, 3.0


@pytest.fixture(scope="module")
def factors():
    return (np.random.default_rng(0).standard_normal((N, D)) * 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    items = np.stack([rng.choice(N, L, replace=False) for _ in range(40)]).astype(np.int64)
    weights = rng.exponential(2.0, (40, L)).astype(np.float32)
    weights[:, : L // 3] = 0          # left padding
    weights[0] = 0                    # an all-padding row
    weights[1, 5] = -1.0              # negative weights count as padding
    return items, weights


def _run(model, items, weights):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["user_vec"], {"items": items, "weights": weights})[0]


def test_onnx_signature_matches_contract(factors):
    model = build_encoder(factors, REG, ALPHA, 8, L)
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["items", "weights"]
    assert [o.name for o in model.graph.output] == ["user_vec"]
    types = [i.type.tensor_type.elem_type for i in model.graph.input]
    assert types == [onnx.TensorProto.INT64, onnx.TensorProto.FLOAT]


def test_onnx_equals_numpy_fold_in(factors, batch):
    out = _run(build_encoder(factors, REG, ALPHA, 20, L), *batch)
    ref = fold_in(factors, gram(factors, REG), *batch, ALPHA, 20)
    assert out.shape == (40, D) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert np.all(out[0] == 0) and np.isfinite(out).all()


def test_more_cg_steps_reach_the_exact_solve(factors, batch):
    exact = solve_exact(factors, gram(factors, REG), *batch, ALPHA)
    np.testing.assert_allclose(fold_in(factors, gram(factors, REG), *batch, ALPHA, 20), exact, atol=1e-4)
    # the iteration matters: one step is far from the solve
    assert np.abs(fold_in(factors, gram(factors, REG), *batch, ALPHA, 1) - exact).max() > 1e-4


def test_default_cg_steps_keep_the_exact_solves_top_items(world_dir, small_world):
    """The default step count is chosen for retrieval: on trained factors the top items of the
    folded-in user vector are those of the exact solve."""
    inter, _ = small_world
    params = ALSParams(factors=32, iterations=8)
    agg = aggregate(inter, None, params.half_life_days)
    item_f, _ = fit_als(confidence(agg, params.alpha), params)
    hist = histories(agg, params.history_len)
    items, weights = pad_histories(*hist, np.arange(0, inter.n_users, 5), params.history_len)
    g = gram(item_f, params.regularization)
    exact = solve_exact(item_f, g, items, weights, params.alpha)
    x = _run(build_encoder(item_f, params.regularization, params.alpha, params.cg_steps,
                           params.history_len), items, weights)

    def top(u):
        return np.argsort(-(u @ item_f.T), axis=1)[:, :10]

    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top(x), top(exact))])
    rel = np.linalg.norm(x - exact, axis=1) / np.maximum(np.linalg.norm(exact, axis=1), 1e-12)
    assert same >= 0.995 and np.median(rel) < 1e-3
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top(fold_in(
        item_f, g, items, weights, params.alpha, 1)), top(exact))]) < same


def test_matches_implicit_recalculate_user(factors, batch):
    items, weights = batch
    model = AlternatingLeastSquares(factors=D, regularization=REG, alpha=1.0)
    model.item_factors = factors
    model.user_factors = np.zeros((1, D), np.float32)
    ours = _run(build_encoder(factors, REG, ALPHA, 24, L), items, weights)
    for row in range(2, 12):
        keep = weights[row] > 0
        cui = sp.csr_matrix(((1 + ALPHA * weights[row][keep]),
                             (np.zeros(keep.sum(), int), items[row][keep])), shape=(1, N))
        theirs = model.recalculate_user(0, cui)
        np.testing.assert_allclose(ours[row], theirs, atol=2e-4)


def test_fold_in_of_training_history_reproduces_als_user_factors(world_dir, small_world):
    inter, _ = small_world
    params = ALSParams(factors=16, iterations=8, history_len=10_000)
    agg = aggregate(inter, None, params.half_life_days)
    item_f, user_f = fit_als(confidence(agg, params.alpha), params)
    hist = histories(agg, params.history_len)
    users = np.arange(0, inter.n_users, 25)
    items, weights = pad_histories(*hist, users, int(np.diff(hist[0]).max()))
    folded = solve_exact(item_f, gram(item_f, params.regularization), items, weights, params.alpha)
    # ALS ends with an item step, so user factors lag one half-iteration: close, not equal
    cos = (folded * user_f[users]).sum(1) / (np.linalg.norm(folded, axis=1)
                                             * np.linalg.norm(user_f[users], axis=1))
    assert np.median(cos) > 0.95


def test_pad_histories_right_aligns_the_most_recent():
    indptr, items, weights = np.array([0, 3, 3]), np.array([7, 8, 9]), np.array([1., 2., 3.])
    it, w = pad_histories(indptr, items, weights, np.array([0, 1]), 2)
    assert it.tolist() == [[8, 9], [0, 0]] and w.tolist() == [[2.0, 3.0], [0.0, 0.0]]
