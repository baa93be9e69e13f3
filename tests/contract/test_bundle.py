"""The bundle contract: manifest typing, hashing and file checks (shared by training and server)."""
import hashlib
import json

import pytest

from contract import (
    FORMAT,
    BundleError,
    check_files,
    parse_manifest,
    read_manifest,
    sha256_file,
)
from contract.bundle import check_named
from contract.events import DEFAULT_EVENT_WEIGHTS

FILES = ("items.npz", "users.npz", "index.faiss", "encoder.onnx")


def manifest(**changes) -> dict:
    raw = {"format": FORMAT, "version": "v1", "created_at": "2026-12-01T00:00:00Z", "dim": 8,
           "history_len": 5, "files": {n: "0" * 64 for n in FILES},
           "history": {"half_life_days": 10.0, "event_weights": {"view": 3.0, "rating": 2.0}},
           "index": {"type": "flat", "search_params": {}}, "ranker": None,
           "encoder": {"file": "encoder.onnx"}, "metrics": {}, "data": {"cutoff": 1700000000},
           "params": {"factors": 8}, "seen_items": "a key another engineer adds"}
    raw.update(changes)
    return raw


def bundle_dir(tmp_path, **changes):
    path = tmp_path / "v1"
    path.mkdir()
    for name in FILES:
        (path / name).write_bytes(name.encode())
    files = {n: hashlib.sha256(n.encode()).hexdigest() for n in FILES}
    (path / "manifest.json").write_text(json.dumps(manifest(files=files, **changes)))
    return path


def test_manifest_is_typed_and_keeps_unknown_keys():
    m = parse_manifest(manifest())
    assert (m.version, m.dim, m.history_len, m.encoder_file, m.ranker_file) == (
        "v1", 8, 5, "encoder.onnx", None)
    assert m.history.half_life_days == 10.0 and m.cutoff == 1.7e9 and m.index_type == "flat"
    assert m.history.event_weights == {**DEFAULT_EVENT_WEIGHTS, "view": 3.0, "rating": 2.0}
    assert m.raw["seen_items"] == "a key another engineer adds"


def test_manifest_without_history_uses_the_default_weights():
    raw = manifest()
    del raw["history"]
    assert parse_manifest(raw).history.event_weights == DEFAULT_EVENT_WEIGHTS


@pytest.mark.parametrize("key, value, problem", [
    ("dim", "abc", "must be an integer"),
    ("dim", 0, r"must be in \[1, "),
    ("dim", True, "must be an integer"),
    ("history_len", 10 ** 12, r"must be in \[1, "),
    ("encoder", "encoder.onnx", "must be an object"),
    ("files", ["items.npz"], "must be an object"),
    ("format", "tailor.bundle/0", f"'tailor.bundle/0', expected '{FORMAT}'"),
    ("version", 7, "must be a string"),
    ("metrics", None, "must be an object"),
])
def test_wrong_types_name_the_key(key, value, problem):
    with pytest.raises(BundleError, match=f"^manifest.json: {key}: {problem}"):
        parse_manifest(manifest(**{key: value}))


@pytest.mark.parametrize("changes, where", [
    ({"history": {"event_weights": {"view": -1.0}}}, "history.event_weights"),
    ({"history": {"event_weights": {"teleport": 1.0}}}, "history.event_weights"),
    ({"history": {"half_life_days": "long"}}, "history.half_life_days"),
    ({"history": {"seen_event_types": "view,purchase"}}, "history.seen_event_types"),
    ({"history": {"seen_event_types": ["view", "teleport"]}}, "history.seen_event_types"),
    ({"history": {"seen_event_types": ["view", "view"]}}, "history.seen_event_types"),
    ({"index": {"type": "hnsw", "search_params": {"efSearch": "64"}}}, "index.search_params"),
    ({"ranker": {"file": "ranker.onnx", "features": "price"}}, "ranker.features"),
    ({"files": {"items.npz": "not hex"}}, "files.items.npz"),
    ({"data": {"cutoff": "yesterday"}}, "data.cutoff"),
    ({"data": {"cutoff": 1_705_191_457_000}}, "data.cutoff"),
])
def test_bad_nested_values_name_the_key(changes, where):
    with pytest.raises(BundleError) as err:
        parse_manifest(manifest(**changes))
    assert err.value.where == f"manifest.json: {where}"


def test_missing_key_and_non_object():
    raw = manifest()
    del raw["history_len"]
    with pytest.raises(BundleError, match="history_len: missing"):
        parse_manifest(raw)
    with pytest.raises(BundleError, match="not a JSON object"):
        parse_manifest([1, 2])


def test_files_are_checked_by_sha256(tmp_path):
    path = bundle_dir(tmp_path)
    m = read_manifest(path)
    check_files(path, m)
    check_named(path, m)
    assert sha256_file(path / "users.npz") == hashlib.sha256(b"users.npz").hexdigest()
    (path / "users.npz").write_bytes(b"changed")
    with pytest.raises(BundleError, match="^users.npz: sha256"):
        check_files(path, m)


def test_unlisted_required_file_and_escaping_path_are_rejected(tmp_path):
    path = bundle_dir(tmp_path, ranker={"file": "ranker.onnx", "features": []})
    with pytest.raises(BundleError, match="does not list 'ranker.onnx'"):
        check_files(path, read_manifest(path))
    raw = json.loads((path / "manifest.json").read_text())
    raw["ranker"] = None
    raw["files"]["../outside"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="escapes the bundle directory"):
        check_files(path, read_manifest(path))


def test_unreadable_manifest_and_wrong_directory_name(tmp_path):
    with pytest.raises(BundleError, match="manifest.json: missing"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_bytes(b"\xff{")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)
    with pytest.raises(BundleError, match="not the directory name"):
        check_named(tmp_path / "other", parse_manifest(manifest()))
