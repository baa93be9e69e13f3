"""User encoder: the ALS fold-in of a weighted history, as numpy and as an ONNX graph.

For item factors Y, G = Y^T Y + reg*I, history rows i with weights w_i (0 = padding,
m_i = w_i > 0): A = G + sum alpha w_i y_i y_i^T, b = sum (1 + alpha w_i) m_i y_i. The encoder
solves A x = b with ``cg_steps`` conjugate-gradient iterations from x = 0, matrix-free
(A p = G p + Y_h^T (alpha w * (Y_h p))), with ``eps`` in both denominators so an all-padding row
gives 0. `fold_in` is the numpy reference the ONNX graph is tested against; `solve_exact` is the
direct solve implicit's ``recalculate_user`` performs.
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
    yh = item_factors[items]                                   # [B, L, d]
    mask = (weights > 0).astype(np.float32)
    aw = alpha * np.maximum(weights, 0).astype(np.float32) * mask
    b = np.einsum("bl,bld->bd", (1.0 + aw) * mask, yh)
    return yh, aw, b


def fold_in(item_factors: np.ndarray, g: np.ndarray, items: np.ndarray, weights: np.ndarray,
            alpha: float, cg_steps: int) -> np.ndarray:
    """Batched matrix-free CG fold-in (the reference of the ONNX graph), float32.

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
    yh, aw, b = _system(item_factors.astype(np.float32), items, weights.astype(np.float32), alpha)
    x = np.zeros_like(b)
    r, p = b.copy(), b.copy()
    rs = (r * r).sum(axis=1, keepdims=True)
    for _ in range(cg_steps):
        ap = p @ g + np.einsum("bl,bld->bd", aw * np.einsum("bld,bd->bl", yh, p), yh)
        step = rs / ((p * ap).sum(axis=1, keepdims=True) + EPS)
        x = x + step * p
        r = r - step * ap
        rs_new = (r * r).sum(axis=1, keepdims=True)
        p = r + (rs_new / (rs + EPS)) * p
        rs = rs_new
    return x.astype(np.float32)


def solve_exact(item_factors, g, items, weights, alpha) -> np.ndarray:
    """Direct solve of the same system (float64), the fold-in CG converges to."""
    yh, aw, b = _system(item_factors.astype(np.float64), items, weights, alpha)
    a = g.astype(np.float64)[None] + np.einsum("bl,bli,blj->bij", aw, yh, yh)
    return np.linalg.solve(a, b[..., None])[..., 0]


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


def build_encoder(item_factors: np.ndarray, regularization: float, alpha: float,
                  cg_steps: int, history_len: int) -> onnx.ModelProto:
    """ONNX graph ``(items int64 [B, L], weights float32 [B, L]) -> user_vec float32 [B, d]``."""
    d = item_factors.shape[1]
    inits = [_c("Y", item_factors.astype(np.float32)), _c("G", gram(item_factors, regularization)),
             _c("alpha", np.float32(alpha)), _c("one", np.float32(1.0)),
             _c("zero", np.float32(0.0)), _c("eps", np.float32(EPS)),
             _c("ax1", np.array([1], np.int64)), _c("ax2", np.array([2], np.int64)),
             _c("shape_bd", np.array([-1, d], np.int64))]
    n = [
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
        helper.make_node("Mul", ["b", "zero"], ["x0"]),
        helper.make_node("ReduceSumSquare", ["b", "ax2"], ["rs0"], keepdims=1),
    ]
    x, r, p, rs = "x0", "b", "b", "rs0"
    for k in range(cg_steps):
        s = f"_{k}"
        n += [
            helper.make_node("MatMul", [p, "G"], ["pG" + s]),
            helper.make_node("MatMul", [p, "YhT"], ["pY" + s]),                # [B, 1, L]
            helper.make_node("Mul", ["pY" + s, "aw"], ["pYw" + s]),
            helper.make_node("MatMul", ["pYw" + s, "Yh"], ["pC" + s]),
            helper.make_node("Add", ["pG" + s, "pC" + s], ["Ap" + s]),
            helper.make_node("Mul", [p, "Ap" + s], ["pAp_e" + s]),
            helper.make_node("ReduceSum", ["pAp_e" + s, "ax2"], ["pAp0" + s], keepdims=1),
            helper.make_node("Add", ["pAp0" + s, "eps"], ["pAp" + s]),
            helper.make_node("Div", [rs, "pAp" + s], ["step" + s]),
            helper.make_node("Mul", ["step" + s, p], ["dx" + s]),
            helper.make_node("Add", [x, "dx" + s], ["x" + s]),
            helper.make_node("Mul", ["step" + s, "Ap" + s], ["dr" + s]),
            helper.make_node("Sub", [r, "dr" + s], ["r" + s]),
            helper.make_node("ReduceSumSquare", ["r" + s, "ax2"], ["rs" + s], keepdims=1),
            helper.make_node("Add", [rs, "eps"], ["rsd" + s]),
            helper.make_node("Div", ["rs" + s, "rsd" + s], ["beta" + s]),
            helper.make_node("Mul", ["beta" + s, p], ["bp" + s]),
            helper.make_node("Add", ["r" + s, "bp" + s], ["p" + s]),
        ]
        x, r, p, rs = "x" + s, "r" + s, "p" + s, "rs" + s
    n.append(helper.make_node("Reshape", [x, "shape_bd"], ["user_vec"]))
    graph = helper.make_graph(
        n, "tailor_user_encoder",
        [helper.make_tensor_value_info("items", TensorProto.INT64, ["B", history_len]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["B", history_len])],
        [helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["B", d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tailor.training")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
