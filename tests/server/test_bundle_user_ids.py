"""The server's copy of a bundle names users by keyed hash only (`server.models.pseudonyms`):
a bundle training wrote with raw ids is rewritten when pushed and, if an older server stored it,
at start; the rewrite is idempotent, leaves every other array as it was, keeps training's own
output untouched, and Recommend answers a known user exactly as from the raw files."""
import asyncio
import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import contract
from clients import TailorClient
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.models.bundle import BundleInvalid, ids_marker, load_bundle
from server.models.pseudonyms import hash_stored
from server.store import tokens

KNOWN = 6
"""How many of the bundle's users are asked for recommendations."""


@pytest.fixture
def recs(channel):
    return rpb_grpc.RecommendationServiceStub(channel)


@pytest.fixture
def client(tailor_server):
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as c:
        yield c


def _raw_copy(demo_bundle: Path, dest: Path, version: str) -> Path:
    """A copy of training's output (raw ids) under another version."""
    shutil.copytree(demo_bundle, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["version"] = version
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _known_users(demo_bundle: Path) -> list[str]:
    users = _npz(demo_bundle / "users.npz")
    longest = np.argsort(-np.diff(users["indptr"]), kind="stable")[:KNOWN]
    return [str(users["user_ids"][i]) for i in longest]


def _assert_hashed(stored: Path, trained: Path) -> None:
    """`stored` is `trained` with user ids replaced by their tokens, and nothing else changed."""
    manifest = contract.read_manifest(stored)
    assert manifest.raw["user_ids"] == ids_marker()
    contract.check_files(stored, manifest)  # the new sha256 is listed
    raw, hashed = _npz(trained / "users.npz"), _npz(stored / "users.npz")
    assert hashed["user_ids"].dtype == np.dtype("S32")
    assert hashed["user_ids"].tolist() == tokens.user_tokens(raw["user_ids"].tolist())
    assert set(raw["user_ids"].tolist()).isdisjoint(
        u.decode() for u in hashed["user_ids"].tolist())
    assert sorted(raw) == sorted(hashed)
    for key in set(raw) - {"user_ids"}:
        np.testing.assert_array_equal(hashed[key], raw[key])
    for name in set(manifest.files) - {"users.npz"}:
        assert (stored / name).read_bytes() == (trained / name).read_bytes()


async def _answers(recs, users: list[str]) -> list[tuple[bool, list[str], list[float]]]:
    out = []
    for user in users:
        r = await recs.Recommend(rpb.RecommendRequest(user_id=user, k=10))
        out.append((r.cold_start, [i.item_id for i in r.items], [i.score for i in r.items]))
    return out


def _assert_same(got, want) -> None:
    assert [(c, ids) for c, ids, _ in got] == [(c, ids) for c, ids, _ in want]
    assert not any(c for c, _, _ in got)  # every one of them known to the bundle
    for (_, _, g), (_, _, w) in zip(got, want):
        assert g == pytest.approx(w, rel=1e-5, abs=1e-6)


async def _served_from_raw_files(tailor_server, raw: Path) -> None:
    """Serve `raw` as loaded from training's files (no rewrite): the answers before it."""
    await tailor_server.registry.install(load_bundle(raw))


async def test_a_pushed_bundle_is_stored_with_keyed_hashes_and_answers_the_same(
        tailor_server, client, recs, demo_bundle, tmp_path):
    users = _known_users(demo_bundle)
    await _served_from_raw_files(tailor_server, _raw_copy(demo_bundle, tmp_path / "a", "raw"))
    before = await _answers(recs, users)
    pushed = _raw_copy(demo_bundle, tmp_path / "b", "pushed")
    trained_bytes = (pushed / "users.npz").read_bytes()
    await asyncio.to_thread(client.push_bundle, pushed)
    assert tailor_server.registry.active.version == "pushed"
    assert tailor_server.registry.active.ids_hashed
    stored = tailor_server.settings.bundles_dir / "pushed"
    _assert_hashed(stored, pushed)
    assert (pushed / "users.npz").read_bytes() == trained_bytes  # training's output as it was
    _assert_same(await _answers(recs, users), before)
    # Deterministic rewrite: pushing the same bundle again finds the same manifest.
    stored_manifest = (stored / "manifest.json").read_bytes()
    await asyncio.to_thread(client.push_bundle, pushed)
    assert (stored / "manifest.json").read_bytes() == stored_manifest


@pytest.fixture
def stored_raw(settings, demo_bundle):
    """A data dir an older server left: two bundles stored with raw ids, no `--bundle`."""
    settings.bundle = None
    bundles = settings.bundles_dir
    bundles.mkdir(parents=True)
    old = _raw_copy(demo_bundle, bundles / "0-older", "0-older")
    new = _raw_copy(demo_bundle, bundles / "1-newer", "1-newer")
    return old, new


async def test_bundles_stored_with_raw_ids_are_rewritten_at_start_once(
        stored_raw, tailor_server, recs, demo_bundle, tmp_path):
    users = _known_users(demo_bundle)
    assert tailor_server.registry.active.version == "1-newer"
    for path in stored_raw:  # the active one and the one kept for rollback
        _assert_hashed(path, demo_bundle)
    after = await _answers(recs, users)
    files = {p: p.read_bytes() for p in sorted(tailor_server.settings.bundles_dir.rglob("*"))
             if p.is_file()}
    assert hash_stored(tailor_server.settings.bundles_dir) == []  # again: nothing to do
    assert {p: p.read_bytes() for p in files} == files
    await _served_from_raw_files(tailor_server, _raw_copy(demo_bundle, tmp_path / "r", "raw"))
    _assert_same(after, await _answers(recs, users))


def test_a_crash_between_the_two_renames_is_finished_at_start(demo_bundle, tmp_path):
    (tmp_path / "bundles").mkdir()
    (tmp_path / "done").mkdir()
    path = _raw_copy(demo_bundle, tmp_path / "bundles" / "v", "v")
    done = _raw_copy(demo_bundle, tmp_path / "done" / "v", "v")
    assert hash_stored(tmp_path / "done") == []
    # The crash: the new manifest written beside the old one, users.npz renamed, no more.
    (path / ".manifest.next").write_bytes((done / "manifest.json").read_bytes())
    shutil.copyfile(done / "users.npz", path / "users.npz")
    assert hash_stored(tmp_path / "bundles") == []
    assert (path / "manifest.json").read_bytes() == (done / "manifest.json").read_bytes()
    assert not (path / ".manifest.next").exists()
    _assert_hashed(path, demo_bundle)


def test_a_bundle_hashed_under_another_key_is_refused(demo_bundle, tmp_path):
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    path = _raw_copy(demo_bundle, bundles / "v", "v")
    assert hash_stored(bundles) == []
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["user_ids"]["key_check"] = "0" * 16
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleInvalid, match="manifest.json: user_ids"):
        load_bundle(path)


def test_a_crash_before_the_renames_leaves_no_copy_of_users_npz_behind(demo_bundle, tmp_path):
    """A crash as a rewrite wrote the new users.npz (`.users.npz.next`, or its temporary file
    cut short) and before the renames left that file in the stored version for as long as
    the version stays (as large as users.npz: 137 MB for 100k users); the next rewrite pass
    drops it, and the bundle is rewritten as usual."""
    (tmp_path / "bundles").mkdir()
    path = _raw_copy(demo_bundle, tmp_path / "bundles" / "v", "v")
    assert hash_stored(tmp_path / "bundles") == []  # stored and hashed; then a scrub crashes
    size = (path / "users.npz").stat().st_size
    (path / ".users.npz.next").write_bytes(b"\0" * size)  # written, not yet renamed
    (path / "..users.npz.next.4242.tmp").write_bytes(b"\0" * (size // 2))  # cut short
    assert hash_stored(tmp_path / "bundles") == []  # the next start's pass
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []
    _assert_hashed(path, demo_bundle)


def test_a_rewrite_whose_manifest_is_in_place_but_not_synced_is_not_called_failed(
        demo_bundle, tmp_path, monkeypatch, caplog):
    """The manifest naming the hashed users.npz was renamed in, then the directory's fsync
    failed (EIO): the start logged "user ids not rewritten" and listed the version among those
    "refused at load", though it loads hashed. Now a warning says the change is unconfirmed."""
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    path = _raw_copy(demo_bundle, bundles / "v", "v")
    real = os.fsync

    def fsync(fd):  # the bundle's directory, once its manifest says the ids are hashed
        if (os.readlink(f"/proc/self/fd/{fd}") == str(path)
                and "user_ids" in json.loads((path / "manifest.json").read_text())):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    caplog.set_level(logging.WARNING, logger="tailor.models.pseudonyms")
    assert hash_stored(bundles) == []
    monkeypatch.undo()
    assert any("user ids rewritten, but" in r.getMessage() and "power loss" in r.getMessage()
               for r in caplog.records), caplog.text
    _assert_hashed(path, demo_bundle)


def test_a_new_manifest_cut_short_by_a_crash_is_dropped_and_the_bundle_scrubbed(
        demo_bundle, tmp_path):
    """A crash while `.manifest.next` was written (before any rename) left it cut short:
    reading it raised at every start's pass (the version listed as refused at load, though it
    loads) and at every erasure's scrub, so a hashed bundle kept the erased users' rows, the
    queue kept growing. It is dropped: the renames after it never began."""
    from server.models.scrub import VOID, ScrubQueue, scrub_stored
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    path = _raw_copy(demo_bundle, bundles / "v", "v")
    assert hash_stored(bundles) == []
    whole = (path / "manifest.json").read_bytes()
    (path / ".manifest.next").write_bytes(whole[:len(whole) // 2])  # the crash
    assert hash_stored(bundles) == []
    assert not (path / ".manifest.next").exists()
    (path / ".manifest.next").write_bytes(whole[:len(whole) // 3])  # again, then an erasure
    queue = ScrubQueue(bundles, clock=lambda: 4e9)  # erased after the cutoff
    for user in ("0", "1"):
        queue.erase_user(None, user)
    assert scrub_stored(bundles) > 0
    bundle = load_bundle(path)
    assert (bundle.users["user_ids"] == VOID).sum() == 2 and bundle.row_of("0") is None
