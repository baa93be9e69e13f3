"""Erasure on disk while serving, and encryption at rest, against `python -m server` as a user
runs it: after DeleteProfile returns, no file under the data dir (the served bundle included)
and no log line holds the user id, their email or a unique event value (UTF-8, UTF-16 and
UTF-32 both ways, inside npz/zip members too); a copy of the data dir taken before the erasure
reveals none of them without the master key, and after it the user's ciphertext stays closed
even with it."""
import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import grpc
import lmdb
import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clients.client import TailorClient
from contract import sha256_file
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.models.scrub import VOID
from server.security.secrets import Secrets
from server.store import TABLES, keys, tokens
from server.store.datakeys import SLOT_BYTES, SLOTS_FILE, DataKeys

USER, EMAIL, UNIQUE = "zoe-91c2f7", "zoe.91c2f7@example.org", "note-4be1d0a7"
ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")


def _blobs(path: Path):
    """(name, bytes) of a file and, for a zip/npz, of each member (numpy stores str as UTF-32);
    nothing for a file gone since it was listed (a running server's scrub queue, `.erased.taking`,
    lives for moments: a walk that polls sees what replaced it next time)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    yield str(path), raw
    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            for member in zf.namelist():
                yield f"{path}!{member}", zf.read(member)


def hits(root: Path, needles=(USER, EMAIL, UNIQUE), text: str | None = None) -> list[tuple[str, str, str]]:
    """(where, needle, encoding) of every occurrence under `root` (and in `text`)."""
    patterns = [(n, enc, n.encode(enc)) for n in needles for enc in ENCODINGS]
    blobs = [b for p in sorted(root.rglob("*")) if p.is_file() for b in _blobs(p)]
    if text is not None:
        blobs.append(("log", text.encode()))
    return [(where, n, enc) for where, raw in blobs for n, enc, pat in patterns if pat in raw]


def test_hits_finds_each_encoding_and_npz_members(tmp_path):
    np.savez_compressed(tmp_path / "u.npz", user_ids=np.array([USER]))
    (tmp_path / "f").write_bytes(UNIQUE.encode("utf-16-be"))
    assert {(Path(w).name, n, e) for w, n, e in hits(tmp_path)} == {
        ("u.npz!user_ids.npy", USER, "utf-32-le"), ("f", UNIQUE, "utf-16-be")}


def _bundle_trained_on_user(demo_bundle: Path, dest: Path) -> Path:
    """A copy of the demo bundle as training writes it, its most active user renamed USER (the
    demo's ids are short numbers that item ids and other bytes would match by chance)."""
    shutil.copytree(demo_bundle, dest)
    with np.load(dest / "users.npz") as npz:
        users = {k: npz[k] for k in npz.files}
    ids = users["user_ids"].astype(object)
    ids[int(np.argmax(np.diff(users["indptr"])))] = USER
    users["user_ids"] = ids.astype(str)
    np.savez(dest / "users.npz", **users)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["files"]["users.npz"] = sha256_file(dest / "users.npz")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _hold_things_about(ch, items: list[str]) -> str:
    """Attributes (with the email), consent, events carrying UNIQUE, one decision; its id."""
    profiles, campaigns = pb_grpc.ProfileServiceStub(ch), cpb_grpc.CampaignServiceStub(ch)
    profiles.UpsertAttributes(pb.UpsertAttributesRequest(user_id=USER, attributes={"email": EMAIL}))
    profiles.SetConsent(pb.SetConsentRequest(user_id=USER, channel="email", opted_in=True,
                                             source="signup"))
    now = time.time()
    profiles.TrackEvents(pb.TrackEventsRequest(events=[
        pb.Event(event_id=f"{USER}-{i}", user_id=USER, type="view", item_id=item,
                 timestamp=now - 60 + i, attributes={"note": UNIQUE})
        for i, item in enumerate(items)]))
    profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="other-1", user_id="other-user", type="view", item_id=items[0], timestamp=now)]))
    campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="welcome", channel="email", policy="bernoulli_ts",
        variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])))
    choice = campaigns.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="welcome", user_id=USER))
    return choice.decision_id


def _sealed_record_and_key(data_dir: Path) -> tuple[bytes, bytes, bytes]:
    """(events key, sealed value, wrapped data key) of USER in a copy of the data dir."""
    env = lmdb.open(str(data_dir / "store"), readonly=True, lock=False, max_dbs=len(TABLES) + 4)
    try:
        with env.begin() as txn:
            events = env.open_db(b"events", txn=txn)
            key, value = next((k, v) for k, v in txn.cursor(db=events)
                              if k.startswith(keys.user_prefix(USER)))
            wrapped = txn.get(tokens.user_token(USER), db=env.open_db(b"datakeys", txn=txn))
    finally:
        env.close()
    return bytes(key), bytes(value), bytes(wrapped)


def test_delete_profile_leaves_no_byte_of_the_user_while_serving(server_process, demo_bundle,
                                                                  tmp_path):
    secrets_dir, data = tmp_path / "secrets", tmp_path / "data"
    trained = _bundle_trained_on_user(demo_bundle, tmp_path / "training-output")
    assert {n for _, n, _ in hits(trained)} == {USER}  # training's own output keeps the raw id
    served = server_process(data, bundle=trained, env={"TAILOR_SECRETS_DIR": str(secrets_dir)})
    with np.load(demo_bundle / "items.npz") as npz:
        items = [str(i) for i in npz["item_ids"][:5]]
    with grpc.insecure_channel(served.target) as ch:
        recs = rpb_grpc.RecommendationServiceStub(ch)
        # Known to the bundle alone (no profile yet): found by the keyed hash of the id.
        assert not recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
        decision = _hold_things_about(ch, items)
        assert decision
        assert not recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
        assert list(data.glob("bundles/*/users.npz"))  # the scans below cover the bundle
        before = tmp_path / "copy-before"
        shutil.copytree(data, before)
        assert hits(before) == []  # encrypted at rest: the copy holds no value, and no id
        started = time.perf_counter()
        pb_grpc.ProfileServiceStub(ch).DeleteProfile(pb.DeleteProfileRequest(user_id=USER))
        erased_in = time.perf_counter() - started
        assert hits(data) == [], "erasure left bytes of the user on disk"
        after = tmp_path / "copy-after"
        shutil.copytree(data, after)
        # Still serving: the user is a cold start, the other user is there.
        assert recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
        other = pb_grpc.ProfileServiceStub(ch).GetProfile(pb.GetProfileRequest(user_id="other-user"))
        assert len(other.events) == 1
    log = served.stop()
    assert hits(data, text=log) == []
    assert erased_in < 60  # the configured bound is 0 s: the key is gone when the call returns
    _ciphertext_stays_closed_with_the_master_key(secrets_dir, before, after)


def _ciphertext_stays_closed_with_the_master_key(secrets_dir: Path, before: Path, after: Path):
    """Everything a thief could hold: the copy from before (ciphertext, wrapped key), the copy
    from after (the pad file), the master key. The data key cannot be rebuilt."""
    secrets = Secrets.load(secrets_dir, generate=False, environ={})
    tokens.use_key(secrets["store-id"].key)
    key, sealed, wrapped = _sealed_record_and_key(before)
    slot = int.from_bytes(wrapped[:8], "big")
    pad = (after / "store" / SLOTS_FILE).read_bytes()[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES]
    assert pad == bytes(SLOT_BYTES)  # overwritten in place
    keys_ = DataKeys(tmp := after / "store", None, None, secrets["encryption"].keys, sync=False)
    try:
        _, kid, half = keys_.unwrap_half(tokens.user_token(USER), wrapped)  # the master key works
        assert kid == secrets["encryption"].kid and tmp.exists()
    finally:
        keys_.close()
    old_pad = (before / "store" / SLOTS_FILE).read_bytes()[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES]
    aad = b"tailor\x01events\x00" + key
    AESGCM(bytes(a ^ b for a, b in zip(old_pad, half))).decrypt(sealed[1:13], sealed[13:], aad)
    with pytest.raises(InvalidTag):  # ... but only with the pad the erasure destroyed
        AESGCM(bytes(a ^ b for a, b in zip(pad, half))).decrypt(sealed[1:13], sealed[13:], aad)


def _users_npz(data: Path) -> dict[str, np.ndarray]:
    (path,) = data.glob("bundles/*/users.npz")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _token_hits(root: Path, token: bytes) -> list[str]:
    return [where for p in sorted(root.rglob("*")) if p.is_file()
            for where, raw in _blobs(p) if token in raw]


def test_bundle_scrub_removes_the_erased_users_rows(server_process, demo_bundle, tmp_path):
    """After DeleteProfile and one scrub period (1 s here), no file under the data dir holds
    the user's keyed hash; their history and seen-set rows are gone from users.npz, the other
    users' rows are as they were; a restarted worker loads the scrubbed bundle."""
    secrets_dir, data = tmp_path / "secrets", tmp_path / "data"
    trained = _bundle_trained_on_user(demo_bundle, tmp_path / "training-output")
    env = {"TAILOR_SECRETS_DIR": str(secrets_dir), "TAILOR_BUNDLE_SCRUB_SECONDS": "1"}
    served = server_process(data, bundle=trained, env=env)
    with np.load(trained / "users.npz") as npz:
        row = int(np.flatnonzero(npz["user_ids"].astype(str) == USER)[0])
        other = str(npz["user_ids"][(row + 1) % len(npz["user_ids"])])
    with grpc.insecure_channel(served.target) as ch:
        recs = rpb_grpc.RecommendationServiceStub(ch)
        assert not recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
        other_before = _item_ids(recs, other)
        before = _users_npz(data)
        pb_grpc.ProfileServiceStub(ch).DeleteProfile(pb.DeleteProfileRequest(user_id=USER))
        secrets = Secrets.load(secrets_dir, generate=False, environ={})
        tokens.use_key(secrets["store-id"].key)
        token = tokens.user_token(USER)
        assert before["user_ids"][row] == token
        deadline = time.monotonic() + 15  # the rewrite, then the queue file goes right after it
        while _token_hits(data / "bundles", token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _token_hits(data / "bundles", token) == []
        after = _users_npz(data)
        assert recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
        assert _item_ids(recs, other) == other_before
    served.stop()
    _rows_gone(before, after, row)
    assert _token_hits(data, token) == [], "a file under the data dir holds the user's hash"
    restarted = server_process(data, env=env)  # a worker that reloads gets the scrubbed file
    with grpc.insecure_channel(restarted.target) as ch:
        recs = rpb_grpc.RecommendationServiceStub(ch)
        assert recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
        assert _item_ids(recs, other) == other_before


def _item_ids(recs, user_id: str) -> list[str]:
    reply = recs.Recommend(rpb.RecommendRequest(user_id=user_id, k=5))
    assert not reply.cold_start
    return [i.item_id for i in reply.items]


def _rows_gone(before: dict, after: dict, row: int) -> None:
    """Row `row` is empty in every CSR and holds no hash; every other row is unchanged."""
    assert after["user_ids"][row] not in set(before["user_ids"].tolist())
    keep = np.arange(len(before["user_ids"])) != row
    assert (after["user_ids"][keep] == before["user_ids"][keep]).all()
    for ptr, cols in (("indptr", ("items", "weights")),
                      ("seen_indptr", ("seen_items", "seen_mask", "seen_last_ts"))):
        if ptr not in before:
            continue
        lo, hi = before[ptr][row], before[ptr][row + 1]
        assert after[ptr][row] == after[ptr][row + 1]
        assert after[ptr][-1] == before[ptr][-1] - (hi - lo)
        for c in cols:
            assert (after[c] == np.concatenate([before[c][:lo], before[c][hi:]])).all()



def _erase_before_any_bundle(server_process, data, env):
    """A server with no bundle; USER erased and the scrub queue taken (no bundle to scrub)."""
    served = server_process(data, env=env)
    with grpc.insecure_channel(served.target) as ch:
        pb_grpc.ProfileServiceStub(ch).DeleteProfile(pb.DeleteProfileRequest(user_id=USER))
    deadline = time.monotonic() + 15
    while (data / "bundles" / ".erased").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (data / "bundles" / ".erased").exists()  # taken by a scrub, no bundle stored
    return served


def test_bundle_pushed_after_the_erasure_is_scrubbed_too(server_process, demo_bundle, tmp_path):
    """A bundle trained before an erasure and pushed after it (the queue already scrubbed)
    loses the user's row at the next scrub as well."""
    secrets_dir, data = tmp_path / "secrets", tmp_path / "data"
    env = {"TAILOR_SECRETS_DIR": str(secrets_dir), "TAILOR_BUNDLE_SCRUB_SECONDS": "1"}
    served = _erase_before_any_bundle(server_process, data, env)
    trained = _bundle_trained_on_user(demo_bundle, tmp_path / "training-output")
    with TailorClient(served.target, timeout=60) as client:
        client.push_bundle(trained)
    tokens.use_key(Secrets.load(secrets_dir, generate=False, environ={})["store-id"].key)
    token = tokens.user_token(USER)
    deadline = time.monotonic() + 15
    while _token_hits(data / "bundles", token) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _token_hits(data, token) == []  # the check at push queued the user again
    with grpc.insecure_channel(served.target) as ch:
        recs = rpb_grpc.RecommendationServiceStub(ch)
        assert recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start


def test_bundle_imported_after_the_erasure_is_scrubbed_too(server_process, demo_bundle, tmp_path):
    """A bundle that holds an erased user, imported with `--bundle` by a later start (hashed
    at start, before any check saw its ids), loses the user's row at the first scrub."""
    secrets_dir, data = tmp_path / "secrets", tmp_path / "data"
    env = {"TAILOR_SECRETS_DIR": str(secrets_dir), "TAILOR_BUNDLE_SCRUB_SECONDS": "1"}
    served = _erase_before_any_bundle(server_process, data, env)
    served.stop()
    trained = _bundle_trained_on_user(demo_bundle, tmp_path / "training-output")
    with np.load(trained / "users.npz") as npz:
        row = int(np.flatnonzero(npz["user_ids"].astype(str) == USER)[0])
    served = server_process(data, bundle=trained, env=env)
    tokens.use_key(Secrets.load(secrets_dir, generate=False, environ={})["store-id"].key)
    token = tokens.user_token(USER)
    deadline = time.monotonic() + 15
    while _token_hits(data / "bundles", token) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # the queue file goes right after the rewrite
    assert _token_hits(data, token) == [], "the imported bundle keeps the erased user's hash"
    assert _users_npz(data)["user_ids"][row] == VOID
    with grpc.insecure_channel(served.target) as ch:
        recs = rpb_grpc.RecommendationServiceStub(ch)
        assert recs.Recommend(rpb.RecommendRequest(user_id=USER, k=5)).cold_start
    served.stop()
    assert hits(data) == []
