import faiss
import numpy as np
import pytest

from training.index import IndexParams, build_index, recall_at_k


@pytest.fixture(scope="module")
def vecs():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 32))
    return (centers[rng.integers(0, 20, 6000)] + 0.5 * rng.standard_normal((6000, 32))).astype(
        np.float32)


def _exact(vecs, queries):
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    return index.search(queries, 10)[1]


def test_small_catalog_gets_exact_flat(vecs):
    index, info = build_index(vecs[:1000])
    assert info["type"] == "flat" and info["recall_at_10"] == 1.0 and info["metric"] == "ip"
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == 1000


@pytest.mark.parametrize("kind, knob", [("auto", "efSearch"), ("ivf", "nprobe")])
def test_large_catalog_is_tuned_to_target_recall(vecs, kind, knob):
    params = IndexParams(kind=kind, flat_threshold=5000, n_queries=300, hnsw_m=16,
                         ef_construction=80)
    index, info = build_index(vecs, params, user_vecs=vecs[:50] * 2)
    assert info["type"] == ("hnsw" if kind == "auto" else "ivf")
    assert info["recall_at_10"] >= 0.95 and knob in info["search_params"]
    # the recorded search parameters reproduce the recall on fresh queries
    queries = (vecs[np.random.default_rng(9).choice(6000, 300, replace=False)]
               + 0.01).astype(np.float32)
    faiss.ParameterSpace().set_index_parameters(
        index, ",".join(f"{k}={v}" for k, v in info["search_params"].items()))
    assert recall_at_k(index.search(queries, 10)[1], _exact(vecs, queries)) >= 0.93


def test_recall_at_k_counts_overlap():
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3, 1]])) == pytest.approx(2 / 3)


def test_recall_is_tie_aware_and_ignores_zero_queries():
    rng = np.random.default_rng(3)
    vecs = np.concatenate([rng.normal(size=(3000, 16)), np.zeros((3000, 16))]).astype(np.float32)
    index, info = build_index(vecs, IndexParams(kind="hnsw", flat_threshold=0, n_queries=300))
    assert info["recall_at_10"] >= 0.95
    # the exact top-10 scores 1.0; a returned item scoring below the 10th best is a miss
    q = np.zeros((1, 16), np.float32)
    q[0, 0] = 1.0
    positives = np.flatnonzero(vecs[:, 0] > 0)
    exact = np.argsort(-(vecs @ q[0]), kind="stable")[:10][None]
    scores = (vecs @ q[0])[exact]
    assert recall_at_k(exact, exact, queries=q, vecs=vecs, exact_scores=scores) == 1.0
    other = exact.copy()
    other[0, -1] = positives[np.argsort(vecs[positives, 0])][0]  # a worse positive item
    assert recall_at_k(other, exact, queries=q, vecs=vecs, exact_scores=scores) == pytest.approx(0.9)


def test_threads_0_leaves_faiss_its_default_thread_count(tmp_path):
    # --threads 0 ("the libraries' default") called faiss.omp_set_num_threads(0): one thread
    import os
    import subprocess
    import sys

    script = ("import faiss, numpy as np\n"
              "from training.index import IndexParams, build_index\n"
              "vecs = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)\n"
              "seen = []\n"
              "for threads in (0, 1, 0):\n"
              "    build_index(vecs, IndexParams(threads=threads))\n"
              "    seen.append(faiss.omp_get_max_threads())\n"
              "print(seen)\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "OMP_NUM_THREADS": "3", "PYTHONPATH": root}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # OMP_NUM_THREADS is OpenMP's default; an earlier --threads 1 does not stick either
    assert proc.stdout.strip() == "[3, 1, 3]"


def test_tuning_queries_are_the_query_items_only():
    # 4,000 vectors bunched at the mean (content-embedded cold items) are easy queries: tuned
    # on every vector the index stops at efSearch 64, where the other items' own queries find
    # 0.979 of their exact top 10, under the 0.99 target
    rng = np.random.default_rng(0)
    warm = rng.standard_normal((2000, 16)) * rng.lognormal(0, 1, (2000, 1))
    cold = warm.mean(0) + 0.01 * rng.standard_normal((4000, 16))
    vecs = np.concatenate([warm, cold]).astype(np.float32)
    params = IndexParams(kind="hnsw", threads=1, n_queries=500, hnsw_m=8, ef_construction=40,
                         target_recall=0.99)
    index, _ = build_index(vecs, params, query_items=np.arange(6000) < 2000)
    exact = faiss.IndexFlatIP(16)
    exact.add(vecs)
    scores, top = exact.search(vecs[:2000], 10)
    found = index.search(vecs[:2000], 10)[1]
    assert recall_at_k(found, top, queries=vecs[:2000], vecs=vecs, exact_scores=scores) >= 0.985
