"""`python -m server backup` while a server serves and writes, then `restore` into a fresh data
dir and a server there: profiles, events, campaigns and the bundle come back, from one instant.
Those two and the Ctrl-C run `python -m server` processes; the other tests run the commands in
this process (`run_command`: what a backup or restore does and says, not its process)."""
import calendar
import json
import os
import shutil
import stat
import tarfile
import threading
import time
from pathlib import Path

import grpc
import pytest

from clients import TailorClient
from clients.client import TailorError
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rec_pb
from protos.tailor.v1 import recommendation_pb2_grpc as rec_grpc
from server.errors import FailedPrecondition
from tests.conftest import ROOT, run_command, run_module, serving, throwaway_crypto
from tests.server.test_erasure_on_disk import _token_hits


def _events(prefix, n, user, t0):
    return [{"event_id": f"{prefix}-{i}", "user_id": user, "type": "click", "item_id": f"{i % 97}",
             "timestamp": t0 + i * 0.001} for i in range(n)]


def _n_events(client, user):
    return client.get_profile(user).features.n_events


@pytest.fixture(scope="module")
def backup_file(module_server_process, tmp_path_factory, demo_bundle):
    """A backup taken while one client keeps writing, shared by the module's tests that only
    read it (its server still serves its data dir): (file, the active version, the decision)."""
    tmp_path = tmp_path_factory.mktemp("backed-up")
    served = module_server_process(tmp_path / "data", bundle=demo_bundle)
    t0 = time.time() - 3600
    with TailorClient(served.target, timeout=30) as client:
        assert client.track_batch(_events("a", 30, "alice", t0)).accepted == 30
        client.create_campaign({"campaign_id": "spring", "policy": "gaussian_ts",
                                "reward_window_seconds": 3600,
                                "variants": [{"id": "red"}, {"id": "blue"}]})
        pick = client.choose_variant("spring", "alice")
        client.report_reward(pick.decision_id, 1.0)
        version = client.model_status().active.version
    stop, written = threading.Event(), []

    def keep_writing():
        with TailorClient(served.target, timeout=30) as client:
            while not stop.is_set():
                batch = _events(f"w{len(written)}", 50, "walker", t0 + len(written))
                written.append(client.track_batch(batch).accepted)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while len(written) < 3:  # the backup starts while batches are landing
            time.sleep(0.05)
        out = tmp_path / "backups" / "tailor.tar.gz"
        reply = json.loads(run_module("server", "backup", "--data-dir", str(tmp_path / "data"),
                                      "--out", str(out)).stdout)
        during = len(written)
        deadline = time.time() + 30
        while len(written) == during and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    assert len(written) > during, "the server kept serving writes after the backup"
    assert reply["active_bundle"] == version and version in reply["bundles"]
    return out, version, pick, tmp_path / "data"


def test_restore_brings_back_profiles_campaigns_and_the_bundle(backup_file, server_process, tmp_path):
    out, version, pick, _ = backup_file
    fresh = tmp_path / "restored"
    reply = json.loads(run_module("server", "restore", "--from", str(out), "--data-dir", str(fresh)).stdout)
    assert reply["active_bundle"] == version
    served = server_process(fresh)  # no --bundle: it must serve what the backup held
    with TailorClient(served.target, timeout=30) as client:
        assert client.model_status().active.version == version
        assert _n_events(client, "alice") == 30
        stats = client.campaign_stats("spring")
        assert {v.variant_id for v in stats.variants} == {"red", "blue"}
        assert sum(v.rewards for v in stats.variants) == 1.0
        # one instant: the walker's feature counter agrees with its raw events in the copy
        walker_events = sum(1 for ev in client.export_events() if ev.user_id == "walker")
        assert walker_events > 0 and walker_events % 50 == 0
        assert _n_events(client, "walker") == walker_events
        assert len(client.recommend("alice", 5).items) == 5


def test_backup_is_one_tar_with_a_manifest(backup_file):
    out, version, _, _ = backup_file
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("tailor-backup.json"))
    assert manifest["format"] == 1 and manifest["active_bundle"] == version
    assert "store/data.mdb" in names and f"bundles/{version}/manifest.json" in names
    assert not [n for n in names if n.endswith("lock.mdb")]


def test_the_data_keys_pads_stay_readable_by_their_owner_only(backup_file, tmp_path):
    """The store makes `keyslots` 0600; the backup's copy was written with the umask (0644),
    so the tar member and the file a restore extracted let every user of the host read it."""
    out, _, _, data = backup_file
    assert stat.S_IMODE((data / "store" / "keyslots").stat().st_mode) == 0o600
    with tarfile.open(out) as tar:
        assert stat.S_IMODE(tar.getmember("store/keyslots").mode) == 0o600
    run_command("restore", "--from", str(out), "--data-dir", str(tmp_path / "d"))
    assert stat.S_IMODE((tmp_path / "d" / "store" / "keyslots").stat().st_mode) == 0o600


def test_a_backup_with_world_readable_pads_restores_them_0600(backup_file, tmp_path):
    """A backup taken before 5c10d5dd holds `store/keyslots` 0644, and tarfile's data filter
    kept that mode: the restored store's pads were readable by every user of the host."""
    old = tmp_path / "old.tar"
    with tarfile.open(backup_file[0]) as src, tarfile.open(old, "w") as dest:
        for member in src.getmembers():
            if member.name == "store/keyslots":
                member.mode = 0o644
            dest.addfile(member, src.extractfile(member) if member.isfile() else None)
    run_command("restore", "--from", str(old), "--data-dir", str(tmp_path / "d"))
    assert stat.S_IMODE((tmp_path / "d" / "store" / "keyslots").stat().st_mode) == 0o600


def test_restore_refuses_a_served_data_dir_and_a_non_empty_one(backup_file, server_process, tmp_path,
                                                               demo_bundle):
    out, _, _, served_dir = backup_file  # the backup fixture's server still holds it
    refused = run_command("restore", "--from", str(out), "--data-dir", str(served_dir),
                          "--force", check=False)
    assert refused.returncode != 0 and "in use by a running server" in refused.stderr
    other = tmp_path / "other"
    (other / "store").mkdir(parents=True)
    (other / "store" / "keep.txt").write_text("x")
    refused = run_command("restore", "--from", str(out), "--data-dir", str(other), check=False)
    assert refused.returncode != 0 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert (other / "store" / "keep.txt").exists()
    run_command("restore", "--from", str(out), "--data-dir", str(other), "--force")
    assert not (other / "store" / "keep.txt").exists() and (other / "store" / "data.mdb").exists()


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path):
    bogus = tmp_path / "bogus.tar"
    (tmp_path / "x.txt").write_text("hello")
    with tarfile.open(bogus, "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")
    refused = run_command("restore", "--from", str(bogus), "--data-dir", str(tmp_path / "d"),
                          check=False)
    assert refused.returncode != 0 and "not a Tailor backup" in refused.stderr
    assert not (tmp_path / "d" / "store").exists()


def test_restore_refuses_a_damaged_backup_in_one_line(tmp_path):
    """A backup cut short (a full disk, an interrupted copy) or not a tar at all: one line
    naming the file, exit 1, nothing restored."""
    from server.backup import backup
    from server.store import Store
    Store(tmp_path / "data" / "store").close()
    (tmp_path / "data" / "bundles" / "v1").mkdir(parents=True)
    (tmp_path / "data" / "bundles" / "v1" / "manifest.json").write_text("{}")
    (tmp_path / "data" / "bundles" / "v1" / "blob").write_bytes(os.urandom(300_000))
    out = tmp_path / "b.tar.gz"
    backup(tmp_path / "data", out)  # what `python -m server backup` runs (the restore is tested)
    cut, junk = tmp_path / "cut.tar.gz", tmp_path / "junk.tar"
    cut.write_bytes(out.read_bytes()[:200_000])
    junk.write_text("hello")
    for damaged in (cut, junk):
        refused = run_command("restore", "--from", str(damaged), "--data-dir",
                              str(tmp_path / "d"), check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith(f"restore: {damaged} cannot be read as a backup")
        assert not (tmp_path / "d" / "store").exists()


def test_backup_to_a_directory_is_refused_and_leaves_nothing(tmp_path):
    """`--out` naming a directory was a traceback after the whole archive was written, leaving
    `<dir>.partial` (the size of the backup) beside it."""
    from server.store import Store
    Store(tmp_path / "data" / "store").close()
    (tmp_path / "backups").mkdir()
    refused = run_command("backup", "--data-dir", str(tmp_path / "data"), "--out",
                          str(tmp_path / "backups"), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "is a directory" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "data"]
    assert list((tmp_path / "backups").iterdir()) == []


def _pointing_at_a_bundle(data: Path, version: str = "20260101T000000-deadbeef") -> Path:
    """A data dir whose store names `version` the active bundle, which has a stored copy (a
    manifest alone); returns that copy's directory."""
    from server.store import Store
    from server.store.keys import BUNDLE_ACTIVE
    store = Store(data / "store")
    store.put("meta", BUNDLE_ACTIVE, version.encode())
    store.close()
    (data / "bundles" / version).mkdir(parents=True)
    (data / "bundles" / version / "manifest.json").write_text("{}")
    return data / "bundles" / version


def test_backup_fails_when_the_active_bundle_is_pruned_while_it_runs(tmp_path, monkeypatch):
    import server.backup.copying as backups
    bundle = _pointing_at_a_bundle(tmp_path / "data")
    real = backups.snapshot_store

    def then_pruned(*args):  # a push prunes it between the snapshot and the copy of bundles
        copied = real(*args)
        shutil.rmtree(bundle)
        return copied
    monkeypatch.setattr(backups, "snapshot_store", then_pruned)
    out = tmp_path / "b.tar"
    with pytest.raises(FailedPrecondition, match="20260101T000000-deadbeef .* was removed while "
                       "the backup ran; run the backup again"):
        backups.backup(tmp_path / "data", out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging left


def test_a_data_dir_whose_active_bundle_was_gone_already_is_backed_up_without_it(tmp_path):
    """Its servers serve the store without that bundle (another stored one, or none: Recommend
    FAILED_PRECONDITION, the rest as usual); the backup refused it for good, saying the bundle
    'was removed while the backup ran; run the backup again', so profiles, consents and
    decisions could not be backed up."""
    shutil.rmtree(_pointing_at_a_bundle(tmp_path / "data"))  # removed by hand, or lost
    out = tmp_path / "b.tar"
    reply = json.loads(run_command("backup", "--data-dir", str(tmp_path / "data"),
                                   "--out", str(out)).stdout)
    assert reply["active_bundle"] == "20260101T000000-deadbeef" and reply["bundles"] == []
    assert reply["active_bundle_missing"] is True
    restored = json.loads(run_command("restore", "--from", str(out), "--data-dir",
                                      str(tmp_path / "restored")).stdout)
    assert restored["active_bundle"] == "20260101T000000-deadbeef"
    from server.store.backup import read_value
    from server.store.keys import BUNDLE_ACTIVE
    assert read_value(tmp_path / "restored" / "store", "meta", BUNDLE_ACTIVE) == \
        b"20260101T000000-deadbeef"  # the store as it was: its servers choose as before


def test_a_plain_tar_name_gives_an_uncompressed_backup(tmp_path):
    from server.store import Store
    Store(tmp_path / "data" / "store").close()
    out = tmp_path / "b.tar"
    run_command("backup", "--data-dir", str(tmp_path / "data"), "--out", str(out))
    with tarfile.open(out, "r:") as tar:  # raises ReadError if compressed
        assert json.load(tar.extractfile("tailor-backup.json"))["active_bundle"] is None


def _erased_around_a_backup(server_process, data: Path, out: Path) -> tuple[float, list]:
    """alice, bob, carol and dave with 3 events each (alice also a decision and an address),
    bob erased before the backup `out` of `data`, alice after it (unsubscribed first: her
    erasure lists her address, marketing-only), dave before it (then back
    with 3 new events) and again after it; carol never. (t0, the tombstones ExportTombstones
    gave before the restore). Served with the keys of `_secrets(data)`."""
    served = server_process(data, env=_secrets(data))
    t0 = time.time() - 3600
    with TailorClient(served.target, timeout=30) as client:
        for user in ("alice", "bob", "carol", "dave"):
            assert client.track_batch(_events(user, 3, user, t0)).accepted == 3
        client.delete_profile("dave")
        assert client.track_batch(_events("dave-back", 3, "dave", time.time())).accepted == 3
        client.upsert_attributes("alice", {"email": "alice@example.com"})
        client.create_campaign({"campaign_id": "spring", "policy": "gaussian_ts",
                                "reward_window_seconds": 3600,
                                "variants": [{"id": "red"}, {"id": "blue"}]})
        client.choose_variant("spring", "alice")  # pending: a record, an index and a due entry
        client.delete_profile("bob")  # before the backup: its tombstone is in it
        run_command("backup", "--data-dir", str(data), "--out", str(out))
        client.set_consent("alice", "email", False, source="test")  # her keep-out: not in it
        client.delete_profile("alice")  # after: only the live store knows
        assert client.delete_profile("dave") == 3 + 3 + 1  # his events, their keys, his state
        tombstones = sorted(client.export_tombstones())
    served.stop()
    return t0, tombstones


@pytest.fixture(scope="module")
def erased_around(module_server_process, tmp_path_factory):
    """`_erased_around_a_backup` once for the module: (its dir holding `data`, `secrets` and
    the backup `tailor.tar`, t0, the tombstones). Each test that restores takes a copy of the
    dir of its own (`_copy_of`)."""
    base = tmp_path_factory.mktemp("erased-around")
    t0, tombstones = _erased_around_a_backup(module_server_process, base / "data",
                                             base / "tailor.tar")
    return base, t0, tombstones


def _copy_of(erased_around, tmp_path: Path) -> tuple[Path, Path, float, list]:
    """(data, out, t0, tombstones): this test's own copy of the module's `erased_around`."""
    base, t0, tombstones = erased_around
    own = tmp_path / "erased-around"
    shutil.copytree(base, own, symlinks=True)
    return own / "data", own / "tailor.tar", t0, tombstones


def _secrets(data: Path) -> dict:
    """The environment of the servers on `data`: their keyrings beside it."""
    return {"TAILOR_SECRETS_DIR": str(data.parent / "secrets")}


def _served_here(data: Path, read, secrets: Path | None = None):
    """What `read(channel)` (async) answers from a server in this process on `data`, with the
    keys of `_secrets(data)` (or `secrets`): for a test that reads back what a restore left,
    not how a process starts (a `python -m server` start cost ~2-3 s of CPU)."""
    import asyncio

    from server.config import Settings
    settings = Settings(port=0, data_dir=data, grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=secrets or data.parent / "secrets")

    async def serve_and_read():
        async with serving(settings) as (_, ch):
            return await read(ch)
    return asyncio.run(serve_and_read())


def _token(data: Path, user: str) -> bytes:
    """`user`'s record-key token under the `store-id` key of the servers on `data`."""
    from server.security.secrets import Secrets
    from server.store import tokens
    tokens.use_key(Secrets.load(data.parent / "secrets", generate=False, environ={})["store-id"].key)
    try:
        return tokens.user_token(user)
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)


def _mentions(store_dir: Path, needle: bytes) -> list[tuple[str, bytes]]:
    """(table, key) of every record of the stopped store whose key or value holds `needle`."""
    import lmdb

    from server.store import TABLES
    from server.store.lmdb_store import open_env
    env, hits = open_env(store_dir, readonly=True, lock=False), []
    try:
        with env.begin() as txn:
            for table in TABLES:
                try:
                    db = env.open_db(table.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                hits += [(table, bytes(k)) for k, v in txn.cursor(db=db) if needle in k or needle in v]
    finally:
        env.close()
    return hits


def test_a_restore_erases_again_the_users_erased_after_the_backup(erased_around, server_process,
                                                                   tmp_path):
    """A user erased after the backup came back with it, records, events, decision, address
    and data key, served until someone erased her again by hand, from a list nobody had. Her
    tombstone, carried over, keeps a keyed hash of her record-key token: the restore finds her
    records by it and erases her again before
    anything serves the store (counts on stderr, no id), and she stays erased; carol, never
    erased, and bob, erased before the backup, are as the backup holds them. dave, erased
    before the backup and after it, came back with the records he made in between: the backup
    holds his tombstone of the first erasure, which the live store's, of the second, replaces.
    Alice's pending decision, counted in the campaign's pending counter, is uncounted as
    DeleteProfile uncounts it (read with the `encryption` key: the record is sealed); before,
    the counter said 1 pending decision nobody had."""
    data, out, t0, before = _copy_of(erased_around, tmp_path)
    erased, carol = [_token(data, u) for u in ("alice", "dave")], _token(data, "carol")
    restored = run_command("restore", "--from", str(out), "--data-dir", str(data),
                           "--force", "--secrets-dir", str(data.parent / "secrets"))
    reply = json.loads(restored.stdout)
    assert (reply["erasures_after_backup"], reply["erased_again"], reply["erasures_not_linked"]) \
        == (2, 2, 0)
    assert reply["records_erased_again"] >= 2 * (3 + 3 + 1) + 1  # events, dedupe keys, state...
    assert reply["erase_again"] is None
    assert (reply["pending_corrected"], reply["pending_not_corrected"]) == (1, 0)
    assert reply["suppressions_after_backup"] == 1  # alice's keep-out
    assert "restore: erased again 2 user(s) erased after the backup" in restored.stderr
    assert "alice" not in restored.stderr + restored.stdout
    assert [_mentions(data / "store", token) for token in erased] == [[], []]
    # nor any byte of a file: not the pages LMDB freed, nor those the backup's compacted copy
    # kept deleted records in
    assert [_token_hits(data, token) for token in erased] == [[], []]
    assert {t for t, _ in _mentions(data / "store", carol)} >= {"profiles", "events", "datakeys"}
    assert _pads_of_the_erased(data, out) == [bytes(32)] * 2  # their backed-up pads: not zero
    served = server_process(data, env=_secrets(data))
    with TailorClient(served.target, timeout=30) as client:
        assert sorted(client.export_tombstones()) == before and len(before) == 3
        for user in ("alice", "bob", "dave"):
            with pytest.raises(TailorError) as err:
                client.get_profile(user)
            assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert _n_events(client, "carol") == 3
        assert client.campaign_stats("spring").pending == 0  # alice's decision: not counted
        assert client.track_batch(_events("alice", 3, "alice", t0)).accepted == 0  # late: refused
        assert [client.delete_profile(u) for u in ("alice", "dave")] == [0, 0]  # nothing left
        listed = client.check_suppression(email="alice@example.com")
        assert (listed.suppressed, listed.reason, listed.marketing_only) == \
            (True, "unsubscribe", True)  # before: the restore lost her unsubscribe
    served.stop()
    assert [_mentions(data / "store", token) for token in erased] == [[], []]


def test_tombstones_written_before_they_kept_the_token_are_counted_not_applied(
        erased_around, tmp_path):
    """A tombstone in the old layout (or migrated from it: `found_by` null) cannot find its user's
    records: the restore carries it, says how many it could not apply and what to do, and the
    user is back until erased by hand."""
    data, out, _, _ = _copy_of(erased_around, tmp_path)
    _drop_tokens(data / "store")
    restored = run_command("restore", "--from", str(out), "--data-dir", str(data),
                           "--force", "--secrets-dir", str(data.parent / "secrets"))
    reply = json.loads(restored.stdout)
    assert (reply["erasures_after_backup"], reply["erased_again"], reply["erasures_not_linked"]) \
        == (2, 0, 2)
    assert reply["erase_again"].startswith("2 user(s) erased after the backup have their records "
                                           "back (their tombstones were carried over, but the "
                                           "restore could not find their records")
    assert f"restore: {reply['erase_again']}" in restored.stderr
    assert reply["impressions_not_linked"] == 2  # and the operator is told, not only the JSON
    assert "2 tombstone(s) found none of their users' impressions" in reply["erase_again"]
    assert "restore: 2 tombstone(s) found none of their users' impressions" in restored.stderr
    async def alice(ch) -> tuple[int, int]:
        profiles = pb_grpc.ProfileServiceStub(ch)
        n_events = (await profiles.GetProfile(pb.GetProfileRequest(user_id="alice"))).features.n_events
        deleted = await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="alice"))
        return n_events, deleted.records_deleted
    n_events, deleted = _served_here(data, alice)
    assert n_events == 3  # back with the backup, to be erased again
    assert deleted > 0


def test_a_restore_scrubs_the_users_it_erases_again_from_the_restored_bundles(
        server_process, tmp_path, demo_bundle):
    """The restored bundles name users by their record-key token: a user erased after the
    backup, erased again from the restored store, kept her bundle row (her training history
    and vector) in the files and was served from it (Recommend not cold start) after the
    restore. The restore now scrubs the rows of the users it erases again from the restored
    bundles before the swap: no file under the data dir holds her token. Her impressions (the
    Recommend answer, keyed by a hash of her id under the `user-id` keyring) go too, found by
    what her tombstone keeps of them (before, they stayed until impression retention)."""
    from tests.server.test_erasure_on_disk import USER, _bundle_trained_on_user
    data, out = tmp_path / "data", tmp_path / "tailor.tar"
    trained = _bundle_trained_on_user(demo_bundle, tmp_path / "trained")
    served = server_process(data, bundle=trained, env=_secrets(data))
    with TailorClient(served.target, timeout=30) as client:
        assert client.track_batch(_events(USER, 3, USER, time.time() - 3600)).accepted == 3
        assert not client.recommend(USER, k=5).cold_start
        assert client.model_stats()  # the answer's impression written (the stats flush first)
        run_command("backup", "--data-dir", str(data), "--out", str(out))
        assert client.delete_profile(USER) > 0
    served.stop()
    token = _token(data, USER)
    restored = run_command("restore", "--from", str(out), "--data-dir", str(data),
                           "--force", "--secrets-dir", str(data.parent / "secrets"))
    reply = json.loads(restored.stdout)
    assert (reply["erased_again"], reply["bundle_rows_erased_again"]) == (1, 1)
    assert (reply["impressions_erased_again"], reply["impressions_not_linked"]) == (1, 0)
    assert _token_hits(data, token) == []

    async def cold_start(ch) -> bool:
        recommend = rec_grpc.RecommendationServiceStub(ch).Recommend
        return (await recommend(rec_pb.RecommendRequest(user_id=USER, k=5))).cold_start
    assert _served_here(data, cold_start)


def test_a_restore_given_another_erasure_key_under_the_same_id_says_it_found_nobody(
        erased_around, tmp_path):
    """Another deployment's secrets (or a key written by hand under a reused id) hold an
    `erasure` key with the id the tombstones name but not their key: the carried tombstones
    found nobody, and the restore said 0 not linked and nothing to do, with alice and dave
    back. The store keeps a check value of each key it wrote tombstones under: those now
    count as not linked, and erase_again says what to do."""
    import base64
    data, out, _, _ = _copy_of(erased_around, tmp_path)
    other = tmp_path / "other-secrets"
    shutil.copytree(data.parent / "secrets", other)
    kids = [line.split(":")[0] for line in (other / "erasure.keys").read_text().split()]
    (other / "erasure.keys").write_text("".join(
        f"{kid}:{base64.b64encode(os.urandom(32)).decode()}\n" for kid in kids))
    restored = run_command("restore", "--from", str(out), "--data-dir", str(data),
                           "--force", "--secrets-dir", str(other))
    reply = json.loads(restored.stdout)
    assert (reply["erasures_after_backup"], reply["erased_again"], reply["erasures_not_linked"]) \
        == (2, 0, 2)
    assert "was given another key under the same id" in reply["erase_again"]
    again = run_command("restore", "--from", str(out), "--data-dir", str(data),
                        "--force", "--secrets-dir", str(data.parent / "secrets"))
    assert json.loads(again.stdout)["erased_again"] == 2  # the checks went with the tombstones


def test_a_restore_without_the_encryption_key_says_to_run_it_again_with_it(erased_around,
                                                                           tmp_path):
    """Without the `encryption` keyring the restore cannot read alice's sealed pending
    decision, and her campaign's pending counter kept counting it with `erase_again` null. Its
    to-do list now says to run the restore again with the keyring, before serving: the live
    store then holds the carried tombstones, and the run corrects the counter. Given a keyring
    that does not open the record (another deployment's), it said there was none and to run
    it again with one, which read nothing again: it now says the keyring given lacks the key."""
    from server.security.secrets import Keyring
    from server.store.backup import read_value
    from server.store.keys import count_key
    data, out, _, _ = _copy_of(erased_around, tmp_path)
    partial = tmp_path / "without-encryption"
    shutil.copytree(data.parent / "secrets", partial)
    (partial / "encryption.keys").unlink()
    first = json.loads(run_command("restore", "--from", str(out), "--data-dir", str(data),
                                   "--force", "--secrets-dir", str(partial)).stdout)
    assert (first["erased_again"], first["pending_not_corrected"]) == (2, 1)
    assert first["erase_again"].startswith("1 pending decision(s) of the users erased again could "
                                           "not be read")
    assert json.loads(read_value(data / "store", "bandit", count_key("spring")))["pending"] == 1
    other = tmp_path / "another-encryption"  # a keyring, but not the one her data key is under
    shutil.copytree(data.parent / "secrets", other)
    (other / "encryption.keys").write_text(Keyring.generate("encryption").text())
    (other / "encryption.keys").chmod(0o600)
    wrong = run_command("restore", "--from", str(out), "--data-dir", str(data),
                        "--force", "--secrets-dir", str(other))
    told = json.loads(wrong.stdout)["erase_again"]
    assert "no 'encryption' keyring" not in told and "no 'encryption' keyring" not in wrong.stderr
    assert told.startswith("1 pending decision(s) of the users erased again could not be read "
                           "with the 'encryption' keyring in --secrets-dir")
    assert "and a --secrets-dir whose 'encryption' keyring holds the keys of that time" in told
    again = json.loads(run_command("restore", "--from", str(out), "--data-dir", str(data),
                                   "--force", "--secrets-dir", str(data.parent / "secrets")).stdout)
    assert (again["erased_again"], again["pending_corrected"], again["erase_again"]) == (2, 1, None)
    assert json.loads(read_value(data / "store", "bandit", count_key("spring")))["pending"] == 0


def _pads_of_the_erased(data: Path, out: Path) -> list[bytes]:
    """The pads, in the restored store, of the data keys the restore destroyed: named in
    `datakey-unzeroed` (with those of the last erasure before the backup, zero already), and
    a pad (not zero) in the backup `out`."""
    from server.store.backup import read_value
    from server.store.datakeys import SLOT_BYTES, SLOTS_FILE, UNZEROED_KEY
    slots = [int(s) for s in read_value(data / "store", "meta", UNZEROED_KEY).split(b",")]
    with tarfile.open(out) as tar:
        backed_up = tar.extractfile(f"store/{SLOTS_FILE}").read()
    restored = (data / "store" / SLOTS_FILE).read_bytes()
    return [restored[s * SLOT_BYTES:(s + 1) * SLOT_BYTES] for s in slots
            if any(backed_up[s * SLOT_BYTES:(s + 1) * SLOT_BYTES])]


def _drop_tokens(store_dir: Path) -> None:
    """Make every tombstone of the stopped store one written before layout tombstone 2 (which
    kept neither what finds its user's records nor their impressions)."""
    from server.store.keys import TOMBSTONE_PREFIX
    from server.store.lmdb_store import open_env
    env = open_env(store_dir, lock=False)
    try:
        with env.begin(write=True, db=env.open_db(b"meta")) as txn:
            for key, raw in list(txn.cursor()):
                if key.startswith(TOMBSTONE_PREFIX):
                    record = json.loads(raw)
                    record.pop("found_by")
                    record.pop("impressions_by", None)
                    txn.put(key, json.dumps(record).encode())
    finally:
        env.close()


def test_a_restore_into_a_fresh_dir_says_erasures_after_the_backup_are_unknown(server_process, tmp_path):
    """A restore into another data dir has no store to take tombstones from: the users erased
    after the backup are back and nobody can tell how many, so it says so (not "0") and what to
    do, from the backup's time; a restore over a store whose erasures the backup holds says
    nothing is to be done."""
    data, out = tmp_path / "data", tmp_path / "tailor.tar"
    served = server_process(data)
    with TailorClient(served.target, timeout=30) as client:
        assert client.track_batch(_events("alice", 3, "alice", time.time() - 3600)).accepted == 3
        backed_up = json.loads(run_command("backup", "--data-dir", str(data),
                                           "--out", str(out)).stdout)
        client.delete_profile("alice")
    served.stop()
    restored = run_command("restore", "--from", str(out), "--data-dir", str(tmp_path / "fresh"))
    reply = json.loads(restored.stdout)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(backed_up["store_snapshot"]))
    assert reply["erasures_after_backup"] is None
    assert reply["erase_again"].startswith("no store was replaced, so users erased after the backup "
                                           "are not known here")
    assert f"call DeleteProfile again for every user whose erasure was requested since {since}" \
        in reply["erase_again"]
    assert f"restore: {reply['erase_again']}" in restored.stderr
    again = run_command("restore", "--from", str(out), "--data-dir", str(tmp_path / "fresh"),
                        "--force")  # over the store it restored: no erasure is missing from it
    assert json.loads(again.stdout)["erasures_after_backup"] == 0
    assert json.loads(again.stdout)["erase_again"] is None and "restore:" not in again.stderr


def test_a_user_erased_while_the_backup_copies_is_in_the_time_to_erase_again_from(
        server_process, tmp_path, monkeypatch):
    """The time from which erasure requests are to be replayed was the backup's `created`,
    taken once the store and the bundles were copied: a user erased after the store snapshot
    began but before then is in the backup, yet outside that time (measured: a 618 MB store,
    erased 0.9 s before `created`, told to replay from the next second: served 3 events again
    after a restore into a fresh dir). It is now the snapshot's own time."""
    import server.backup.copying as backups
    from server.backup import backup
    data, out = tmp_path / "data", tmp_path / "tailor.tar"
    served = server_process(data)
    erased = []
    with TailorClient(served.target, timeout=30) as client:
        assert client.track_batch(_events("alice", 3, "alice", time.time() - 3600)).accepted == 3
        copy_bundles = backups._copy_bundles

        def erased_while_copying(src, dest):  # the store snapshot is taken; a copy of >= 1 s
            assert client.delete_profile("alice") > 0
            erased.append(time.time())
            time.sleep(int(erased[0]) + 1.05 - time.time())
            return copy_bundles(src, dest)
        monkeypatch.setattr(backups, "_copy_bundles", erased_while_copying)
        manifest = backup(data, out)
    served.stop()
    restored = run_command("restore", "--from", str(out), "--data-dir", str(tmp_path / "fresh"))
    since = json.loads(restored.stdout)["erase_again"].split("requested since ", 1)[1][:20]
    assert calendar.timegm(time.strptime(since, "%Y-%m-%dT%H:%M:%SZ")) <= erased[0]
    assert manifest["store_snapshot"] <= erased[0] < manifest["created"]
    async def n_events(ch) -> int:
        profile = pb_grpc.ProfileServiceStub(ch).GetProfile(pb.GetProfileRequest(user_id="alice"))
        return (await profile).features.n_events
    # why: back with the backup, to be erased again (the servers used the repo's var/secrets)
    assert _served_here(tmp_path / "fresh", n_events, ROOT / "var" / "secrets") == 3


def test_a_backup_an_older_tailor_wrote_is_told_to_be_replayed_from_before_its_end():
    """An older backup's manifest has only `created` (its end): replaying from it would miss
    the users erased while it copied, so the line says to take an earlier time."""
    from server.backup.todo import erase_again
    told = erase_again(None, False, {"created": 1796515200.0})
    assert "requested since a little before 2026-12-06T00:00:00Z (the end of the backup" in told


def test_an_erasure_during_the_backup_leaves_the_copy_whole(tmp_path, monkeypatch):
    """The store snapshot comes first and the pads after it: a user the snapshot holds but an
    erasure shredded in between kept their records and data key entry in the copy and lost
    their pad, so the restored store failed every ingest batch naming them (KeyError, the
    whole batch). The copy keeps the pad the snapshot's entry needs: the user is in the backup
    as of the snapshot, like anyone erased after it."""
    from server.profiles import ProfileSchema, TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.store import Store
    from server.store import backup as store_backup

    def event(i, user):
        return TrackedEvent(f"e{i}-{user}", user, "view", "web", "", f"i{i}", 0.0,
                            time.time() - 3600 + i, {})
    crypto = throwaway_crypto()
    live = Store(tmp_path / "live", sync=False, crypto=crypto)
    repo = ProfileRepository(live, ProfileSchema().layout())
    repo.ingest([event(1, "ann"), event(2, "bob")], [None, None])

    class ErasedWhileCopying:  # the live environment (LMDB opens one per process); an
        def __init__(self, path):  # erasure lands right after its copy
            self.env = live.env

        def copy(self, *args, **kw):
            self.env.copy(*args, **kw)
            repo.delete_user("ann")

        def close(self):
            pass
    monkeypatch.setattr(store_backup, "_open_readonly", ErasedWhileCopying)
    store_backup.snapshot_store(tmp_path / "live", tmp_path / "copy")
    live.close()
    restored = Store(tmp_path / "copy", sync=False, crypto=crypto)
    again = ProfileRepository(restored, ProfileSchema().layout())
    assert len(again.read("ann")[2]) == 1
    assert again.ingest([event(3, "ann"), event(4, "bob")], [None, None]).duplicates == []
    assert [len(again.read(u)[2]) for u in ("ann", "bob")] == [2, 2]
    restored.close()


def test_a_backup_waits_for_a_bundle_rewrite_in_progress(tmp_path, demo_bundle):
    """A scrub (or the id hashing) replaces a bundle's users.npz, then its manifest with the new
    file's sha256, under the bundles directory's lock. A backup copying between the two renames
    took the new users.npz with the old manifest: the restored bundle failed its checksum. The
    backup now copies bundles under the same lock (shared), so it waits for the rewrite."""
    import contract
    from server.backup import backup
    from server.store import Store
    from server.store.lock import locked_dir
    data = tmp_path / "data"
    Store(data / "store").close()
    bundle = data / "bundles" / demo_bundle.name
    shutil.copytree(demo_bundle, bundle)
    mid, done = threading.Event(), threading.Event()

    def rewrite():  # the two renames of `_swap_users`, with a pause between them
        with locked_dir(data / "bundles"):
            staged = bundle / ".users.npz.next"
            shutil.copy(bundle / "users.npz", staged)
            with open(staged, "ab") as fh:
                fh.write(b"\0")  # other bytes: another sha256
            manifest = json.loads((bundle / "manifest.json").read_text())
            manifest["files"]["users.npz"] = contract.sha256_file(staged)
            os.replace(staged, bundle / "users.npz")
            mid.set()
            time.sleep(1.0)
            (bundle / "manifest.json").write_text(json.dumps(manifest))
        done.set()
    writer = threading.Thread(target=rewrite)
    writer.start()
    assert mid.wait(10)
    backup(data, tmp_path / "b.tar")
    assert done.is_set()  # the copy waited for the rewrite
    writer.join()
    with tarfile.open(tmp_path / "b.tar") as tar:
        name = f"bundles/{demo_bundle.name}"
        manifest = json.load(tar.extractfile(f"{name}/manifest.json"))
        tar.extract(f"{name}/users.npz", tmp_path / "x", filter="data")
    assert manifest["files"]["users.npz"] == contract.sha256_file(tmp_path / "x" / name / "users.npz")


def _with_store(archive, damaged, data: bytes) -> None:
    """Copy the tar `archive` to `damaged` with its store/data.mdb replaced by `data`."""
    with tarfile.open(archive) as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            body = src.extractfile(member) if member.isfile() else None
            if member.name == "store/data.mdb":
                member.size, body = len(data), __import__("io").BytesIO(data)
            dst.addfile(member, body)


def test_restore_refuses_a_backup_whose_store_does_not_open(tmp_path):
    """A store copy damaged inside a well-formed tar (bit rot on an uncompressed archive, a copy
    cut short before it was archived) was put in place as the data dir's store, which no
    server could then open; refused in one line before anything is replaced."""
    from server.backup import backup, restore
    from server.store import Store
    store = Store(tmp_path / "data" / "store", sync=False)
    store.put_many("events", [(b"k%05d" % i, os.urandom(500)) for i in range(2000)])
    store.close()
    out = tmp_path / "b.tar"
    backup(tmp_path / "data", out)  # in process: the refusals below are the CLI's
    with tarfile.open(out) as tar:
        good = tar.extractfile("store/data.mdb").read()
    junk, cut = tmp_path / "junk.tar", tmp_path / "cut.tar"
    _with_store(out, junk, os.urandom(len(good)))
    _with_store(out, cut, good[:len(good) // 2])
    live = tmp_path / "live"
    restore(out, live)
    before = (live / "store" / "data.mdb").read_bytes()
    for damaged in (junk, cut):
        for target, force in ((tmp_path / "d", ()), (live, ("--force",))):
            refused = run_command("restore", "--from", str(damaged), "--data-dir",
                                  str(target), *force, check=False)
            assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
            assert refused.stderr.startswith(f"restore: {damaged} holds a store that cannot be "
                                             "opened"), refused.stderr
        assert not (tmp_path / "d" / "store").exists()
        assert (live / "store" / "data.mdb").read_bytes() == before


_BACKUP_KILLED = """
import os, sys
from pathlib import Path
import server.backup.copying as b
write_tar = b.write_tar


def killed(staging, out):  # killed with the archive written, before its rename
    b.os.replace = lambda *args: os._exit(9)
    write_tar(staging, out)


b.write_tar = killed
b.backup(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_what_a_killed_backup_left_is_removed_by_the_next_one(tmp_path):
    """A backup killed midway (a cron timeout, the OOM killer) left its staging dir, a whole
    store copy, and its `.partial` archive beside the output, for good: a backup killed every
    night filled the backup disk. The next backup into that directory removes what dead
    backups left there, and only that (a running backup's files are its own)."""
    import subprocess
    import sys

    from server.processes import process_started
    from server.store import Store
    from tests.conftest import ROOT
    store = Store(tmp_path / "data" / "store", sync=False)
    store.put_many("events", [(b"k%05d" % i, os.urandom(500)) for i in range(2000)])
    store.close()
    out = tmp_path / "out"
    out.mkdir()
    killed = subprocess.run([sys.executable, "-c", _BACKUP_KILLED, str(tmp_path / "data"),
                             str(out / "monday.tar.gz")], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == 9, killed.stderr
    (left,) = out.iterdir()  # the staging dir, its partial archive inside
    assert (left / "monday.tar.gz.partial").is_file(), sorted(p.name for p in left.iterdir())
    from server.backup.staging import _host
    running = out / f".tailor-backup-{_host()}.{os.getpid()}.{process_started(os.getpid())}-abc"
    running.mkdir()  # a backup of an older version (no lock) running now, in this process
    older = out / f"sunday.tar.gz.tailor-{_host()}.999999999.1.partial"
    older.touch()  # an older version's partial archive beside the output, its process gone
    elsewhere = out / "wednesday.tar.gz.tailor-0badc0de.1.1.partial"
    elsewhere.touch()  # another host's (its pid says nothing here): not ours to judge
    run_command("backup", "--data-dir", str(tmp_path / "data"), "--out",
                str(out / "tuesday.tar.gz"))
    assert sorted(p.name for p in out.iterdir()) == [running.name, "tuesday.tar.gz", elsewhere.name]


def test_restore_refuses_an_encrypted_backup_without_its_pad_file(tmp_path):
    """An archive of an encrypted store whose `store/keyslots` is gone (an archive made or
    repacked by hand) was restored, replacing the store with one no server will open (every
    user would read as erased); refused before anything is replaced."""
    from server.backup import backup
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    from server.store import Store
    from tests.server.test_encryption import _event
    store = Store(tmp_path / "data" / "store", sync=False, crypto=throwaway_crypto())
    ProfileRepository(store, ProfileSchema().layout()).ingest([_event(1), _event(2, "bo")],
                                                              [None, None])
    store.close()
    out, bare = tmp_path / "b.tar", tmp_path / "bare.tar"
    backup(tmp_path / "data", out)  # in process: the refusal below is the CLI's
    with tarfile.open(out) as src, tarfile.open(bare, "w") as dst:
        for member in src.getmembers():
            if member.name != "store/keyslots":
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    refused = run_command("restore", "--from", str(bare), "--data-dir",
                          str(tmp_path / "d"), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(f"restore: {bare} holds a store that cannot be opened")
    assert "keyslots" in refused.stderr and not (tmp_path / "d" / "store").exists()


def test_a_restore_puts_its_copy_on_disk_before_it_names_it_the_store(tmp_path, monkeypatch):
    """The restore extracted the store copy, its pads and the bundles, then renamed them into
    place with nothing fsynced but the data dir: a power loss right after it could leave a
    `store/` whose data.mdb (or keyslots, or a bundle file) was never written out, a torn store
    the next start serves. Every file and directory of the copy is fsynced before the rename
    that names it, and the data dir after it."""
    from server.backup import backup, restore
    from server.store import Store
    store = Store(tmp_path / "data" / "store", sync=False, crypto=throwaway_crypto())
    store.put("meta", b"from-backup", b"yes")
    store.close()
    version = tmp_path / "data" / "bundles" / "20260101T000000-cafe"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("{}")
    (version / "users.npz").write_bytes(os.urandom(64))
    backup(tmp_path / "data", tmp_path / "b.tar")
    live = tmp_path / "live"
    calls, fsync, replace = [], os.fsync, os.replace

    def traced_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def traced_replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        replace(src, dst)
    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    restore(tmp_path / "b.tar", live)
    staging = str(live / ".restoring")
    for name in ("store", "bundles"):
        moved = next(i for i, c in enumerate(calls) if c[0] == "replace"
                     and c[1] == f"{staging}/{name}")
        synced = {c[1] for c in calls[:moved] if c[0] == "fsync"}
        wanted = {f"{staging}/{name}"} | {
            str(path).replace(str(live / name), f"{staging}/{name}", 1)
            for path in (live / name).rglob("*")}
        assert wanted - synced == set(), name
        assert ("fsync", str(live)) in calls[moved:]
    assert {p.name for p in (live / "store").iterdir()} >= {"data.mdb", "keyslots"}


@pytest.mark.parametrize("stamp", [b"layout-dead_letter", b"key-version"])
def test_restore_refuses_a_backup_a_newer_tailor_wrote_before_replacing_anything(tmp_path, stamp):
    """A backup of a store a newer Tailor had migrated (a record layout or the key version
    later than this one knows) was put in place, with --force over the live store, which the
    swap then deleted: no server of this version opens the result ('written by a newer
    Tailor'). Refused before anything is replaced, naming what is newer."""
    from server.backup import backup
    from server.store import Store, keys
    store = Store(tmp_path / "data" / "store", sync=False)
    key = keys.layout_key("dead_letter") if stamp.startswith(b"layout") else b"key-version"
    store.put("meta", key, b"99")
    store.close()
    out = tmp_path / "newer.tar"
    backup(tmp_path / "data", out)  # in process: the refusal below is the CLI's
    live = tmp_path / "live"
    store = Store(live / "store", sync=False)
    store.put("meta", b"live", b"yes")
    store.close()
    before = (live / "store" / "data.mdb").read_bytes()
    refused = run_command("restore", "--from", str(out), "--data-dir", str(live),
                          "--force", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(f"restore: {out} holds a store that cannot be opened (the "
                                     "store was written by a newer Tailor; "), refused.stderr
    assert "99" in refused.stderr
    assert (live / "store" / "data.mdb").read_bytes() == before
    assert not (live / ".restoring").exists()


def test_ctrl_c_during_a_backup_is_one_line_and_leaves_nothing(tmp_path):
    """Ctrl-C during `python -m server backup` (or restore, compact, migrate) printed a
    KeyboardInterrupt traceback. One line, exit 130 as a shell's; what the backup had staged
    is removed."""
    import signal
    import subprocess
    import sys

    from server.store import Store
    from server.store.lock import locked_dir
    from tests.conftest import ROOT
    data, out = tmp_path / "data", tmp_path / "out"
    Store(data / "store").close()
    (data / "bundles" / "v1").mkdir(parents=True)
    (data / "bundles" / "v1" / "manifest.json").write_text("{}")
    out.mkdir()
    with locked_dir(data / "bundles"):  # a bundle rewrite in progress: the backup waits for it
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "backup", "--data-dir", str(data), "--out",
             str(out / "b.tar")], cwd=ROOT, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while not list(out.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)  # its staging dir: the store is copied, the bundles wait
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and err == "backup: interrupted\n", err[-3000:]
    assert list(out.iterdir()) == []


def test_a_backup_is_on_disk_under_its_name_once_it_returns(tmp_path, monkeypatch):
    """The backup fsynced its archive and renamed it into place, but not the directory: a power
    loss right after a backup reported done (a cron job moving on to delete older backups)
    could leave no file under the name. The directory is fsynced after the rename."""
    from server.backup import backup
    from server.store import Store
    Store(tmp_path / "data" / "store").close()
    out = tmp_path / "out" / "b.tar"
    calls, fsync, replace = [], os.fsync, os.replace

    def traced_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def traced_replace(src, dst):
        calls.append(("replace", str(dst)))
        replace(src, dst)
    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    backup(tmp_path / "data", out)
    named = calls.index(("replace", str(out)))
    assert ("fsync", str(out.parent)) in calls[named:]


def test_backup_and_restore_on_a_full_disk_say_so_in_one_line(tmp_path, small_disk):
    """A backup whose disk filled died on an OSError traceback (ENOSPC, or lmdb.DiskError from
    the store copy); a restore into a full disk said the backup 'cannot be read as a backup (No
    space left on device)', as if the file were damaged. Each says the disk is full, leaves
    nothing, and the backup file stays good."""
    from server.backup import backup, restore
    from server.store import Store
    data = small_disk / "data"
    store = Store(data / "store", sync=False, map_size=16 << 20)
    store.put_many("events", [(b"k%05d" % i, os.urandom(500)) for i in range(9_000)])
    store.close()
    refused = run_command("backup", "--data-dir", str(data), "--out",
                          str(small_disk / "out" / "b.tar"), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(f"backup: no space left on the disk of {small_disk / 'out'} "
                                     "for the backup"), refused.stderr
    assert list((small_disk / "out").iterdir()) == []
    good = tmp_path / "b.tar"
    backup(data, good)  # in process: what fills the disk for the restore's refusal below
    restore(good, small_disk / "r1")
    refused = run_command("restore", "--from", str(good), "--data-dir",
                          str(small_disk / "r2"), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(f"restore: no space left on the disk of {small_disk / 'r2'} "
                                     f"to restore {good}"), refused.stderr
    assert sorted(p.name for p in (small_disk / "r2").iterdir()) == ["tailor.lock"]


def test_restore_refuses_a_backup_whose_bundle_files_do_not_match_their_manifest(
        tmp_path, demo_bundle):
    """A bundle file damaged inside a well-formed tar (bit rot on an uncompressed archive) was
    restored, with --force replacing (and deleting) the working bundles: the server then
    started, health SERVING, without a model (the stored pointer names a bundle that fails
    its checksum: Recommend FAILED_PRECONDITION). Refused before anything is replaced."""
    import io

    from server.backup import backup, restore
    from server.store import Store
    from server.store.keys import BUNDLE_ACTIVE
    data = tmp_path / "data"
    store = Store(data / "store", sync=False)
    store.put("meta", BUNDLE_ACTIVE, demo_bundle.name.encode())
    store.close()
    shutil.copytree(demo_bundle, data / "bundles" / demo_bundle.name)
    good, rotten = tmp_path / "good.tar", tmp_path / "rotten.tar"
    backup(data, good)  # in process: the refusal below is the CLI's
    with tarfile.open(good) as src, tarfile.open(rotten, "w") as dst:
        for member in src.getmembers():
            body = src.extractfile(member) if member.isfile() else None
            if member.name.endswith("/items.npz"):
                raw = bytearray(body.read())
                raw[len(raw) // 2] ^= 0xFF  # one bit flipped
                body = io.BytesIO(bytes(raw))
            dst.addfile(member, body)
    live = tmp_path / "live"
    restore(good, live)
    before = {p.relative_to(live): p.read_bytes() for p in live.rglob("*") if p.is_file()}
    refused = run_command("restore", "--from", str(rotten), "--data-dir", str(live),
                          "--force", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(
        f"restore: {rotten} holds bundle {demo_bundle.name} whose items.npz does not match its "
        "manifest (sha256 "), refused.stderr
    assert {p.relative_to(live): p.read_bytes() for p in live.rglob("*") if p.is_file()} == before


def test_a_backup_of_a_store_an_older_tailor_wrote_restores_and_is_migrated(server_process, tmp_path):
    """The data dir of a release from before layouts had versions (the layouts test's fixture:
    keys holding raw ids, records in the clear, its active bundle never copied): backed up by
    this one as it is, restored into another data dir, and served there: the first start
    migrates it (re-key, sealing, layout steps) and its profiles, events and decisions answer."""
    from server.backup import restore
    from tests.server.test_store_layouts import _fixture_store
    data, out = tmp_path / "old", tmp_path / "old.tar.gz"
    (data / "store").mkdir(parents=True)
    _fixture_store(data / "store")
    backed_up = json.loads(run_command("backup", "--data-dir", str(data), "--out", str(out)).stdout)
    assert backed_up["active_bundle_missing"] is True and backed_up["bundles"] == []
    restore(out, tmp_path / "new")  # in process: what is tested is the first start on it
    served = server_process(tmp_path / "new", env={  # (its records are over a year old)
        "TAILOR_SECRETS_DIR": str(tmp_path / "secrets"), "TAILOR_EVENT_RETENTION_DAYS": "inf",
        "TAILOR_DECISION_RETENTION_DAYS": "inf"})
    with TailorClient(served.target, timeout=30) as client:
        assert _n_events(client, "ann") == 2 and _n_events(client, "bo") == 1
        assert len(client.get_profile("ann").events) == 2
        decided = {d["decision_id"] for d in client.export_decisions("c1", include_pending=True)}
        assert decided == {"d1", "d2"}


def test_what_the_re_erasure_could_not_reach_is_a_line_each_for_the_operator():
    """Impressions no tombstone finds, and the records the restore could not open without the
    `encryption` keyring, were counted in the JSON alone: a restore that left a campaign's
    pending counter or a job's counts wrong said nothing on stderr. Counts only, never a user."""
    from server.backup import left_behind
    assert left_behind({"impressions_not_linked": 0, "pending_not_corrected": 0,
                        "send_states_unread": 0}) == []
    lines = left_behind({"impressions_not_linked": None, "pending_not_corrected": 3,
                         "send_states_unread": 2})
    assert [line.split(" ", 1)[0] for line in lines] == ["3", "2"]
    assert "pending counters still count them" in lines[0] and "'encryption'" in lines[0]
    assert "suppressed 'erased'" in lines[1]


def test_what_the_re_erasure_could_not_reach_is_on_the_operators_to_do_list():
    """`erase_again`, the to-do list of the restore's JSON, was null when every carried
    tombstone found its user's records, though impressions no tombstone found were back, and
    pending counters and send jobs' counts the restore could not correct without the
    `encryption` keyring stayed wrong: only a stderr line each said so. They are now on it,
    counts and times only: the sealed records first (running the restore again brings back
    whatever DeleteProfile erased meanwhile), then the DeleteProfile replay."""
    from server.backup.todo import erase_again
    counts = {"store_snapshot": 1796515200.0, "impressions_not_linked": 0,
              "pending_not_corrected": 0, "send_states_unread": 0}
    assert erase_again(0, False, counts) is None
    shown = erase_again(0, False, {**counts, "impressions_not_linked": 2})
    assert shown.startswith("2 tombstone(s) found none of their users' impressions")
    assert "call DeleteProfile again for every user whose erasure was requested since " \
        "2026-12-06T00:00:00Z" in shown
    unread = erase_again(0, False, {**counts, "pending_not_corrected": 3, "send_states_unread": 1})
    assert unread.startswith("3 pending decision(s) and 1 send record(s) of the users erased "
                             "again could not be read (no 'encryption' keyring in --secrets-dir)")
    assert "run this restore again with --force" in unread and "DeleteProfile" not in unread
    both = erase_again(2, False, {**counts, "impressions_not_linked": 2, "send_states_unread": 1})
    assert both.index("run this restore again") < both.index("2 user(s) erased after the backup") \
        < both.index("2 tombstone(s) found none") < both.index("call DeleteProfile again")


def test_one_record_commits_on_a_restored_store_write_single_pages(tmp_path):
    """The restore extracted data.mdb in tarfile's 16 KiB copies and left it cached in 4-page
    folios: the server opened on it wrote one back whole for each page a commit rewrote
    (measured: bytes to storage over bytes LMDB wrote, 3.9 before, 1.2 with the file dropped
    from the cache, `growth.drop_cached`)."""
    from server.backup import backup, restore
    from tests.server.test_store_growth import kilobyte_profiles, storage_per_rewrite
    kilobyte_profiles(tmp_path / "data" / "store").close()
    backup(tmp_path / "data", tmp_path / "b.tar")
    restore(tmp_path / "b.tar", tmp_path / "live")
    assert storage_per_rewrite(tmp_path / "live" / "store", range(6_000)) < 2


def _decision(decision_id: str) -> bytes:
    """A pending decision record of campaign `spring`, as the campaigns writer stores it."""
    from server.campaigns.decision_log import encode_decision
    return encode_decision({"decision_id": decision_id, "campaign_id": "spring", "user_id": "",
                            "timestamp": 1000.0, "arm": 0, "propensity": 0.5,
                            "status": "pending"})


def _half_sealed(data: Path, crypto, monkeypatch, cut: bool) -> None:
    """A store under `data` written without encryption at rest (its `store-id` key the one of
    `crypto`), then opened with it: the seal of its records (one a transaction here) stopped
    by an error (`cut`) right after the first of alice's and bob's decisions (their keys
    start with their tokens: the other is not sealed), or let to finish. alice, bob and carol
    each hold a pending decision of `spring` (its counter: 3), alice and carol a recipient's
    record in an unfinished job."""
    from server.messages.sends import SendRecords
    from server.store import Store, keys, rekey, tokens
    from server.store.crypto import StoreCrypto
    store = Store(data / "store", sync=False,
                  crypto=StoreCrypto(crypto.master, crypto.store_id_key, False))

    def fill(txn):
        for n, user in enumerate(("alice", "bob", "carol")):
            pkey = tokens.user_token(user) + keys.SEP + b"d%d" % n
            store.table("decisions").put(txn, pkey, _decision(f"d{n}"))
            store.raw_table("decisions").put(txn, keys.due_key(2000.0 + n, f"d{n}"), pkey)
        store.raw_table("bandit").put(txn, keys.count_key("spring"), b'{"pending": 3}')
    store.write(fill)
    SendRecords(store).create("big", "spring", ["alice", "carol"], {}, {}, os.getpid())
    store.close()
    monkeypatch.setattr(rekey, "REKEY_CHUNK", 1)
    order = sorted(tokens.user_token(user) for user in ("alice", "bob", "carol"))
    chunks = 1 + min(order.index(tokens.user_token(user)) for user in ("alice", "bob")) \
        if cut else None
    sealed, seal_chunk = [], rekey._seal_chunk

    def stopped(store, txn):  # an error inside chunk `chunks + 1`: it never commits
        if len(sealed) == chunks:
            raise KeyboardInterrupt("stopped midway")
        sealed.append(seal_chunk(store, txn))
        return sealed[-1]
    monkeypatch.setattr(rekey, "_seal_chunk", stopped)
    if not cut:
        Store(data / "store", sync=False, crypto=crypto).close()
        return
    with pytest.raises(KeyboardInterrupt):
        Store(data / "store", sync=False, crypto=crypto)
    monkeypatch.setattr(rekey, "_seal_chunk", seal_chunk)


@pytest.mark.parametrize("cut", [True, False])
def test_a_backup_taken_while_the_first_seal_was_cut_short_restores_its_records_read(
        tmp_path, monkeypatch, cut):
    """Encryption at rest turned on seals a store's records in chunks, `meta seal-progress`
    naming where it stopped; a backup taken after a start was stopped midway holds some records
    sealed and the rest as they were. The restore took every per-user record of such a copy
    for sealed: given the `encryption` keyring, those not sealed yet did not open, and bob's
    pending decision (the one after the mark) was counted `pending_not_corrected` with
    `erase_again` telling to run the restore again, which read it no better. It now reads each
    record as the seal left it, by the mark: alice's and bob's decisions uncounted, alice's
    unsettled recipient counted suppressed `erased`; carol's records are as they were, and the
    first open of the restored store seals what was left."""
    from server.backup import backup, restore
    from server.messages.sends import SendRecords
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store import Store, keys, tokens
    from server.store.backup import read_value
    crypto, erasure, data = throwaway_crypto(), Keyring.generate("erasure"), tmp_path / "data"
    ids = Keyring.generate("user-id")
    try:
        _half_sealed(data, crypto, monkeypatch, cut)
        progress = read_value(data / "store", "meta", b"seal-progress")
        part = json.loads(progress)[0] if progress else None  # cut: the mark is among the
        assert part == (keys.USER_TABLES.index("decisions") if cut else None)  # decisions
        backup(data, tmp_path / "b.tar")
        store = Store(data / "store", sync=False, crypto=crypto)  # (its seal goes on)
        store.write(lambda txn: [Tombstones(store, erasure, impressions=ids).erase_user(
            txn, user) for user in ("alice", "bob")])  # both erased after the backup
        store.close()
        reply = restore(tmp_path / "b.tar", data, force=True, erasure=erasure.keys,
                        master=crypto.master)
        assert (reply["erased_again"], reply["pending_corrected"], reply["pending_not_corrected"],
                reply["send_states_unread"], reply["erase_again"]) == (2, 2, 0, 0, None)
        assert read_value(data / "store", "meta", b"seal-progress") == progress
        store = Store(data / "store", sync=False, crypto=crypto)
        try:
            assert json.loads(store.get("bandit", keys.count_key("spring")))["pending"] == 1
            job = SendRecords(store).job("big")
            assert (job["suppressed"], job["sent"]) == ({"erased": 1}, 0)
            assert [r.user for r in SendRecords(store).recipients("big")] == ["carol"]
            carol = tokens.user_token("carol") + keys.SEP + b"d2"
            assert store.get("decisions", carol) == _decision("d2")
            assert store.get("meta", b"sealed") == b"1"
        finally:
            store.close()
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)


def test_a_send_job_in_an_old_layout_is_settled_by_the_restore_and_migrated_after(tmp_path):
    """A backup holds its store in the layouts of the Tailor that wrote it, and the restore
    re-erases before any layout step runs (at the first start on the restored store). A
    SendCampaign job of layout send_job 1 (its terms a plain digest; no owner_started,
    cancelled, stopped_by) with an erased user's unsettled recipient: the restore counts her
    suppressed `erased` in the job as it stands, the other counts as they were, and the
    first open migrates the job (plain_terms) with its counts kept: one pending, carol's."""
    import dataclasses

    from server.backup import backup, restore
    from server.messages.jobs import SendProgress, blind_plain_terms
    from server.messages.sends import SENT, SUPPRESSED, Recipient, SendRecords
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store import KINDS, Store, keys, tokens
    from server.store.backup import read_value
    crypto, erasure, ids = throwaway_crypto(), Keyring.generate("erasure"), Keyring.generate("user-id")
    one = tuple(dataclasses.replace(k, version=1, steps={}) if k.name == "send_job" else k
                for k in KINDS)
    data, plain = tmp_path / "data", "ab" * 16
    users = [Recipient(0, "alice"), Recipient(1, "carol"), Recipient(2, "dave", SENT),
             Recipient(3, "erin", SUPPRESSED, reason="optout")]
    old = {"campaign": "spring", "context": {}, "rates": {}, "total": 4, "sent": 1,
           "suppressed": {"optout": 1}, "failed": {}, "owner": 1, "started": 1000.0,
           "finished": 0.0, "terms": plain}  # as a Tailor of send_job 1 wrote it
    try:
        store = Store(data / "store", sync=False, crypto=crypto, layouts=one)
        SendRecords(store).create("big", "spring", users, {}, {}, 1)
        store.write(lambda txn: store.raw_table("sends").put(txn, keys.send_job_key("big"),
                                                             json.dumps(old).encode()))
        store.close()
        backup(data, tmp_path / "b.tar")
        store = Store(data / "store", sync=False, crypto=crypto)
        store.write(lambda txn: Tombstones(store, erasure, impressions=ids).erase_user(txn, "alice"))
        store.close()
        reply = restore(tmp_path / "b.tar", data, force=True, erasure=erasure.keys,
                        master=crypto.master)
        assert (reply["erased_again"], reply["sends_erased_again"], reply["send_states_unread"]) \
            == (1, 1, 0)
        assert read_value(data / "store", "meta", keys.layout_key("send_job")) == b"1"
        settled = json.loads(read_value(data / "store", "sends", keys.send_job_key("big")))
        assert settled == {**old, "suppressed": {"optout": 1, "erased": 1}}
        store = Store(data / "store", sync=False, crypto=crypto)
        try:
            assert store.migrated == {"send_job": 1}
            job = SendRecords(store).job("big")
            assert job == {**{k: v for k, v in settled.items() if k != "terms"},
                           "plain_terms": blind_plain_terms(plain)}
            progress = SendProgress.of("big", job)
            assert (progress.sent, progress.suppressed, progress.pending) == \
                (1, {"optout": 1, "erased": 1}, 1)
            assert [r.user for r in SendRecords(store).recipients("big")] == ["carol", "dave", "erin"]
        finally:
            store.close()
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)
