"""User encoder: the ALS fold-in of a weighted history, as numpy and as an ONNX graph.

For item factors Y, G = Y^T Y + reg*I, history rows i with weights w_i (0 = padding,
m_i = w_i > 0): A = G + sum alpha w_i y_i y_i^T, b = sum (1 + alpha w_i) m_i y_i. The encoder
forms A per user (d x d; a history is at most L items) and solves A x = b with ``cg_steps``
iterations of conjugate gradients preconditioned by G^-1, from x = 0. G^-1 A is the identity
plus a rank-L update, so the preconditioned iteration converges in a handful of steps (on the
100k bench bundle 6 steps give the exact solve's top 10 items for 99.99% of positions, 10 reach
float32 precision, plain CG needs 20+), and the graph stays small: ONNX Runtime pays per node,
so graph size is the encoder's latency at small batches (1 user: 64 µs at 6 steps, 96 at 10).
``eps`` in both denominators makes an all-padding row give 0. `fold_in` is the numpy reference
the ONNX graph is tested against; `solve_exact` is the direct solve implicit's
``recalculate_user`` performs.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["gram", "fold_in", "solve_exact", "build_encoder", "pad_histories", "EPS"]

logger = logging.getLogger("tailor.training.encoder")

EPS = 1e-12
OPSET = 18


def gram(item_factors: np.ndarray, regularization: float) -> np.ndarray:
    """``Y^T Y + reg * I`` in float32 (computed in float64)."""
    y = item_factors.astype(np.float64)
    return (y.T @ y + regularization * np.eye(y.shape[1])).astype(np.float32)


def _system(item_factors, items, weights, alpha):
    """(A [B, d, d], b [B, d]) of every user's fold-in (without G in A)."""
    yh = item_factors[items]                                   # [B, L, d]
    mask = (weights > 0).astype(yh.dtype)
    aw = alpha * np.maximum(weights, 0).astype(yh.dtype) * mask
    b = np.einsum("bl,bld->bd", (1.0 + aw) * mask, yh)
    return np.einsum("bl,bli,blj->bij", aw, yh, yh), b


def fold_in(item_factors: np.ndarray, g: np.ndarray, items: np.ndarray, weights: np.ndarray,
            alpha: float, cg_steps: int) -> np.ndarray:
    """Batched G^-1-preconditioned CG fold-in (the reference of the ONNX graph), float32.

    Parameters
    ----------
    item_factors : ndarray, shape (n_items, d)
    g : ndarray, shape (d, d)
        `gram` of the item factors.
    items : ndarray of int, shape (B, L)
    weights : ndarray of float32, shape (B, L)
        0 marks padding.

    Returns
    -------
    ndarray of float32, shape (B, d)
    """
    c, b = _system(item_factors.astype(np.float32), items, weights.astype(np.float32), alpha)
    a = c + g.astype(np.float32)[None]
    g_inv = np.linalg.inv(g.astype(np.float64)).astype(np.float32)
    x = np.zeros_like(b)
    r = b.copy()
    z = r @ g_inv
    p, rz = z.copy(), (r * z).sum(axis=1, keepdims=True)
    for k in range(cg_steps):
        ap = np.einsum("bd,bde->be", p, a)
        step = rz / ((p * ap).sum(axis=1, keepdims=True) + EPS)
        x = x + step * p
        if k == cg_steps - 1:
            break
        r = r - step * ap
        z = r @ g_inv
        rz_new = (r * z).sum(axis=1, keepdims=True)
        p = z + (rz_new / (rz + EPS)) * p
        rz = rz_new
    return x.astype(np.float32)


def solve_exact(item_factors, g, items, weights, alpha) -> np.ndarray:
    """Direct solve of the same system (float64), the fold-in CG converges to."""
    c, b = _system(item_factors.astype(np.float64), items, weights, alpha)
    return np.linalg.solve(g.astype(np.float64)[None] + c, b[..., None])[..., 0]


def pad_histories(indptr, items, weights, rows, history_len: int):
    """Dense ``(items int64 [B, L], weights float32 [B, L])`` for user ``rows`` (right-aligned)."""
    rows = np.asarray(rows)
    start, end = indptr[rows], indptr[rows + 1]
    n = end - start
    col = np.arange(history_len)[None, :] - (history_len - n)[:, None]
    valid = col >= 0
    src = np.where(valid, start[:, None] + col, 0)
    out_i = np.where(valid, items[src] if items.size else 0, 0).astype(np.int64)
    out_w = np.where(valid, weights[src] if weights.size else 0, 0).astype(np.float32)
    return out_i, out_w


def _c(name, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _system_nodes() -> list[onnx.NodeProto]:
    """items, weights -> A [B, d, d] and b [B, 1, d]."""
    return [
        helper.make_node("Gather", ["Y", "items"], ["Yh"], axis=0),            # [B, L, d]
        helper.make_node("Transpose", ["Yh"], ["YhT"], perm=[0, 2, 1]),        # [B, d, L]
        helper.make_node("Greater", ["weights", "zero"], ["mask_b"]),
        helper.make_node("Cast", ["mask_b"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Relu", ["weights"], ["w_pos"]),
        helper.make_node("Mul", ["w_pos", "alpha"], ["aw0"]),
        helper.make_node("Mul", ["aw0", "mask"], ["aw2"]),
        helper.make_node("Unsqueeze", ["aw2", "ax1"], ["aw"]),                 # [B, 1, L]
        helper.make_node("Add", ["aw", "one"], ["c0"]),
        helper.make_node("Unsqueeze", ["mask", "ax1"], ["mask3"]),
        helper.make_node("Mul", ["c0", "mask3"], ["c"]),
        helper.make_node("MatMul", ["c", "Yh"], ["b"]),                        # [B, 1, d]
        helper.make_node("Mul", ["YhT", "aw"], ["YhTw"]),                      # [B, d, L]
        helper.make_node("MatMul", ["YhTw", "Yh"], ["C"]),                     # [B, d, d]
        helper.make_node("Add", ["C", "G"], ["A"]),
    ]


def _dot_nodes(u: str, v: str, out: str) -> list[onnx.NodeProto]:
    """Row-wise <u, v> of [B, 1, d] tensors as [B, 1, 1]."""
    return [helper.make_node("Mul", [u, v], [out + "_e"]),
            helper.make_node("ReduceSum", [out + "_e", "ax2"], [out], keepdims=1)]


def _pcg_nodes(steps: int) -> tuple[list[onnx.NodeProto], str]:
    """Preconditioned CG on A x = b from x = 0; returns the nodes and the name of x."""
    n = [helper.make_node("MatMul", ["b", "Ginv"], ["z"]), *_dot_nodes("b", "z", "rz")]
    x, r, p, rz = "", "b", "z", "rz"
    for k in range(steps):
        s = f"_{k}"
        n += [helper.make_node("MatMul", [p, "A"], ["Ap" + s]),               # [B, 1, d]
              *_dot_nodes(p, "Ap" + s, "pAp0" + s),
              helper.make_node("Add", ["pAp0" + s, "eps"], ["pAp" + s]),
              helper.make_node("Div", [rz, "pAp" + s], ["step" + s]),
              helper.make_node("Mul", ["step" + s, p], ["dx" + s])]
        if x:
            n.append(helper.make_node("Add", [x, "dx" + s], ["x" + s]))
        x = "x" + s if x else "dx" + s
        if k == steps - 1:
            break
        n += [helper.make_node("Mul", ["step" + s, "Ap" + s], ["dr" + s]),
              helper.make_node("Sub", [r, "dr" + s], ["r" + s]),
              helper.make_node("MatMul", ["r" + s, "Ginv"], ["z" + s]),
              *_dot_nodes("r" + s, "z" + s, "rz" + s),
              helper.make_node("Add", [rz, "eps"], ["rzd" + s]),
              helper.make_node("Div", ["rz" + s, "rzd" + s], ["beta" + s]),
              helper.make_node("Mul", ["beta" + s, p], ["bp" + s]),
              helper.make_node("Add", ["z" + s, "bp" + s], ["p" + s])]
        r, p, rz = "r" + s, "p" + s, "rz" + s
    return n, x


def build_encoder(item_factors: np.ndarray, regularization: float, alpha: float,
                  cg_steps: int, history_len: int) -> onnx.ModelProto:
    """ONNX graph ``(items int64 [B, L], weights float32 [B, L]) -> user_vec float32 [B, d]``."""
    if cg_steps < 1:
        raise ValueError("cg_steps must be >= 1")
    d = item_factors.shape[1]
    g = gram(item_factors, regularization)
    inits = [_c("Y", item_factors.astype(np.float32)), _c("G", g),
             _c("Ginv", np.linalg.inv(g.astype(np.float64)).astype(np.float32)),
             _c("alpha", np.float32(alpha)), _c("one", np.float32(1.0)),
             _c("zero", np.float32(0.0)), _c("eps", np.float32(EPS)),
             _c("ax1", np.array([1], np.int64)), _c("ax2", np.array([2], np.int64)),
             _c("shape_bd", np.array([-1, d], np.int64))]
    solve, x = _pcg_nodes(cg_steps)
    nodes = [*_system_nodes(), *solve, helper.make_node("Reshape", [x, "shape_bd"], ["user_vec"])]
    graph = helper.make_graph(
        nodes, "tailor_user_encoder",
        [helper.make_tensor_value_info("items", TensorProto.INT64, ["B", history_len]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["B", history_len])],
        [helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["B", d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tailor.training")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
