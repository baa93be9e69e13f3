import hashlib
import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
import pytest

from contract import FORMAT
from kernels.ranking import FEATURES
from training.bundle import find_bundles, validate_bundle
from training.encoder import pad_histories

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"format", "version", "created_at", "dim", "history_len", "history", "files", "index",
        "encoder", "ranker", "metrics", "data", "params"}


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def bundle(world_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    out = _cli("train", "--interactions", str(world_dir / "interactions.csv"),
               "--items", str(world_dir / "items.csv"), "--out", str(root), "--factors", "32")
    path = Path(out.strip().splitlines()[-1])
    assert "ndcg@10" in out and path.parent == root
    assert f"report: {root / 'report.html'}" in out and (root / "report.html").is_file()
    return path


def test_manifest_follows_the_contract(bundle):
    m = validate_bundle(bundle).raw
    assert KEYS <= set(m) and m["format"] == FORMAT and m["version"] == bundle.name
    for name, digest in m["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    assert set(m["files"]) == {p.name for p in bundle.iterdir()} - {"manifest.json"}
    for method in ("model", "retrieval", "popularity"):
        assert set(m["metrics"][method]) == {"recall@10", "ndcg@10", "map@10", "coverage",
                                             "recall@1", "ndcg@1", "recall@3", "ndcg@3",
                                             "recall@5", "ndcg@5"}
    assert m["metrics"]["n_eval_users"] > 0 and len(m["data"]["fingerprint"]) == 64
    assert m["ranker"] is None or m["ranker"]["features"] == list(FEATURES)
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".tmp")]


def test_arrays_index_and_encoder_agree(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    items = np.load(bundle / "items.npz", allow_pickle=False)
    users = np.load(bundle / "users.npz", allow_pickle=False)
    n = items["item_ids"].shape[0]
    for key in ("titles", "urls", "category", "price", "popularity", "recency_days"):
        assert items[key].shape == (n,)
    assert items["category"].max() < items["category_names"].shape[0]
    index = faiss.read_index(str(bundle / "index.faiss"))
    assert index.ntotal == n == m["index"]["n_items"] and index.d == m["dim"]
    indptr = users["indptr"]
    assert indptr.shape[0] == users["user_ids"].shape[0] + 1
    assert indptr[-1] == users["items"].shape[0]
    assert np.diff(indptr).max() <= m["history_len"] and (users["weights"] > 0).all()
    sess = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    it, w = pad_histories(indptr, users["items"], users["weights"], np.arange(64), m["history_len"])
    vec = sess.run(["user_vec"], {"items": it, "weights": w})[0]
    assert vec.shape == (64, m["dim"]) and np.isfinite(vec).all()
    _, found = index.search(vec, 10)
    assert (found >= 0).all()


def test_tampered_bundle_is_rejected(bundle, tmp_path):
    import shutil

    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    with open(copy / "items.npz", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="items.npz"):
        validate_bundle(copy)
    assert isinstance(find_bundles(tmp_path)[0][1], str)


def test_bootstrap_trains_once_then_reports(tmp_path):
    first = _cli("bootstrap", "--data-dir", str(tmp_path), "--users", "600", "--items", "200")
    bundles = list((tmp_path / "bundles").iterdir())
    assert len(bundles) == 1 and str(bundles[0]) in first
    second = _cli("bootstrap", "--data-dir", str(tmp_path))
    assert "valid" in second and list((tmp_path / "bundles").iterdir()) == bundles


def test_same_run_written_twice_gets_two_versions(trained, tmp_path):
    from training.bundle import write_bundle

    a, b = write_bundle(trained, tmp_path), write_bundle(trained, tmp_path)
    assert a != b and a.name.split("-")[1] == b.name.split("-")[1]
    assert validate_bundle(a).raw["data"] == validate_bundle(b).raw["data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])


@pytest.mark.parametrize("half_life", [0.0, -5.0])
def test_a_bundle_the_server_would_refuse_is_not_written(tmp_path, half_life):
    # `train --half-life-days 0` trained for minutes, then wrote a bundle whose manifest
    # the server (contract.bundle) refuses: half_life_days must be > 0
    from dataclasses import replace

    from contract import BundleError
    from training.als import ALSParams
    from training.bundle import write_bundle
    from training.pipeline import TrainConfig, train
    from training.readers import load

    rows = tmp_path / "i.csv"
    rows.write_text("user_id,item_id,timestamp,event\n" + "".join(
        f"u{u},i{(u + k) % 7},{1700000000 + 3600 * k},view\n" for u in range(6) for k in range(5)))
    config = TrainConfig(als=ALSParams(factors=4, iterations=2, half_life_days=half_life),
                         use_ranker=False, drift_users=0)
    result = train(*load(rows), config)
    with pytest.raises(BundleError, match="half_life_days"):
        write_bundle(result, tmp_path / "bundles")
    assert list((tmp_path / "bundles").iterdir()) == []
    good = replace(result, config=replace(config, als=ALSParams(factors=4, iterations=2)))
    validate_bundle(write_bundle(good, tmp_path / "bundles"))


def test_a_bundle_is_on_disk_before_write_bundle_returns(trained, tmp_path, monkeypatch):
    """`training train` fsynced nothing: a push (or a server's import) right after a power loss
    could read a torn file under the version's name. Every file and the directory are synced
    before the rename, the rename (and each directory made for the root) before it returns."""
    import os

    from training.bundle import write_bundle
    real, synced = os.fsync, []

    def fsync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    root = tmp_path / "made" / "bundles"
    path = write_bundle(trained, root)
    monkeypatch.undo()
    staged = [p for p in synced if p.name.startswith(".tmp-") or p.parent.name.startswith(".tmp-")]
    assert sorted(p.name for p in staged if p.parent.name.startswith(".tmp-")) == \
        sorted(p.name for p in path.iterdir())  # every file, before the rename
    assert any(p.name.startswith(".tmp-") for p in staged)  # and the directory
    assert synced[-1] == root  # the rename, last
    assert {tmp_path, tmp_path / "made"} <= set(synced)  # the root's levels made here


def test_a_bundle_whose_root_cannot_be_synced_after_its_rename_is_written_with_a_warning(
        trained, tmp_path, monkeypatch, caplog):
    """The rename's directory fsync is the write's last step: an I/O error there left the bundle
    in place but `training train` said `error: [Errno 5] Input/output error` (exit 2, no path
    printed), and a run again wrote a second version beside it. It is the change done with a
    warning now, as the server's commands report it (docs/operations.md, Durability)."""
    import errno
    import logging
    import os

    from training.bundle import write_bundle
    root = tmp_path / "bundles"
    root.mkdir()
    real = os.fsync

    def fsync(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")) == root:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with caplog.at_level(logging.WARNING, logger="tailor.training.bundle"):
        path = write_bundle(trained, root)
    monkeypatch.undo()
    assert [p.name for p in root.iterdir()] == [path.name] and (path / "manifest.json").is_file()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (f"bundle written: {path}, but {root} could not be synced (Input/output "
                       "error): the change is in place, but may not survive a power loss")
