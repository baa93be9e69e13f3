"""A data dir in the layouts before consent by purpose and the delivery event types opens,
migrated once: consent states become marketing consent with a history, and feature states
gain zero counts for the new types and keep everything else."""
import json

import lmdb
import numpy as np

from kernels import features as kf
from server.contact.consent import consent_reason
from server.profiles import ProfileSchema, TrackedEvent
from server.profiles.codec import decode_states
from server.profiles.repository import ProfileRepository
from server.profiles.schema import EVENT_TYPES, EVENT_TYPES_V1
from server.store import Store, keys
from tests.server.test_store_layouts import fixture_records, v1_dir  # noqa: F401 (fixture)

OLD_META = {"attributes": {"email": "gil@example.org"}, "created_at": 50.0, "updated_at": 200.0,
            "consent": {"email": {"opted_in": False, "source": "unsubscribe event", "timestamp": 200.0},
                        "sms": {"opted_in": True, "source": "signup", "timestamp": 100.0}}}


def test_old_consent_becomes_marketing_consent_with_its_history(v1_dir):  # noqa: F811
    env = lmdb.open(str(v1_dir), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"gil\x1fmeta", json.dumps(OLD_META).encode(),  # key version 1: the raw id
                db=env.open_db(b"profiles", txn=txn))
    env.close()
    store = Store(v1_dir, sync=False)
    assert store.migrated["profile_meta"] == 1
    _, meta, _ = ProfileRepository(store, ProfileSchema().layout()).read("gil")
    assert meta["consent"] == {"email": {"marketing": OLD_META["consent"]["email"]},
                               "sms": {"marketing": OLD_META["consent"]["sms"]}}
    assert [(c["channel"], c["timestamp"]) for c in meta["consent_history"]] == [
        ("sms", 100.0), ("email", 200.0)]
    assert meta["attributes"] == OLD_META["attributes"] and meta["created_at"] == 50.0
    defaults = {"email": "opt_in", "sms": "opt_in"}
    assert consent_reason(meta, "email", "marketing", defaults) == "no_consent"
    assert consent_reason(meta, "sms", "marketing", defaults) is None
    store.close()


def test_old_feature_states_keep_their_features_and_count_new_types(v1_dir):  # noqa: F811
    schema = ProfileSchema()
    old_layout, layout = schema.layout(EVENT_TYPES_V1), schema.layout()
    old_raw = fixture_records("profiles")[b"ann" + keys.FEATURES_SUFFIX]  # key version 1
    old = kf.read_features(old_layout, decode_states(old_layout, [old_raw])[0], 2e9)
    store = Store(v1_dir, sync=False)
    assert store.migrated["profile_state"] == 1
    repo = ProfileRepository(store, layout)
    new = kf.read_features(layout, repo.states(["ann"])[0], 2e9)
    t_old = len(EVENT_TYPES_V1)
    for name in ("counts_all", "counts_decayed"):
        np.testing.assert_array_equal(new[name][..., :t_old, :], old[name])
        assert not new[name][..., t_old:, :].any()
    for name in ("category_affinity", "hour_of_week", "monetary_decayed"):
        np.testing.assert_array_equal(new[name], old[name])
    assert (new["n_events"], new["last_ts"]) == (old["n_events"], old["last_ts"])
    assert repo.ingest([TrackedEvent("b1", "ann", "email_bounce", "email", "", "", 0.0,
                                     old["last_ts"] + 1, {})], [None]).accepted == [0]
    after = kf.read_features(layout, repo.states(["ann"])[0], 2e9)
    assert after["counts_all"][EVENT_TYPES.index("email_bounce"), layout.channel_code("email")] == 1
    assert after["n_events"] == old["n_events"] + 1
    store.close()


def test_appended_types_move_records_as_fl_migrate_does():
    from kernels import feature_layout as fl
    from server.profiles.codec import AppendedTypes, update_records
    schema = ProfileSchema()
    old, new = schema.layout(EVENT_TYPES_V1), schema.layout()
    rng = np.random.default_rng(3)
    n = 400
    events = kf.Events(type=rng.integers(0, len(EVENT_TYPES_V1), n).tolist(),
                       channel=rng.integers(0, 5, n).tolist(), ts=(1.7e9 + np.arange(n)).tolist(),
                       item=rng.integers(0, 10**6, n).tolist(),
                       category=rng.integers(-1, 20, n).tolist(), value=rng.random(n).tolist())
    records = update_records(old, [None] * 20, (np.arange(n) % 20).tolist(), events)
    mover = AppendedTypes(old, new)
    moved = decode_states(new, [mover.record(r) for r in records])
    assert np.array_equal(moved, decode_states(new, [mover._dense(r) for r in records]))
    for state, raw in zip(moved, records):
        ref = fl.migrate(old, new, decode_states(old, [raw])[0])
        got, want = new.views(state), new.views(ref)
        for name in ("header", "counts", "decayed", "money", "category", "hour", "rc_w"):
            np.testing.assert_array_equal(got[name], want[name])
        k = int(state[fl.N_RECENT])  # fl.migrate sorts the recent items by time
        order = np.argsort(got["rc_ts"][:k], kind="stable")
        for name in ("rc_item", "rc_ts", "rc_amt"):
            np.testing.assert_array_equal(got[name][:k][order], want[name][:k])


def _meta(*history: tuple[str, str, str, bool, float]) -> dict:
    """A layout-2 meta record of `history` ((channel, purpose, source, opted_in, timestamp),
    oldest first), its current state the last change of each (channel, purpose)."""
    changes = [{"channel": c, "purpose": p, "opted_in": o, "source": s, "timestamp": t}
               for c, p, s, o, t in history]
    consent: dict = {}
    for h in changes:
        consent.setdefault(h["channel"], {})[h["purpose"]] = {
            k: h[k] for k in ("opted_in", "source", "timestamp")}
    return {"attributes": {}, "created_at": 1.0, "updated_at": 9.0, "consent": consent,
            "consent_history": changes}


def test_a_carrier_stops_event_written_by_layout_2_is_reopened_a_clients_is_not(tmp_path):
    """Layout 2 (main before the STOP mark) wrote `unsubscribe event` for a client's sms
    unsubscribe event and for the one the server records after a carrier's 21610 alike, and a
    START reopened both. Opened here, the 21610's (dated as the carrier STOP beside it, at the
    user and, shared, at another profile at the number) takes the 21610 event's source, which
    a START reopens; a client's keeps its own, the user's withdrawal; a record with neither is
    left byte for byte. A Tailor of layout 2 then refuses the store."""
    import dataclasses

    import pytest

    from server.contact.consent import reopenable
    from server.errors import FailedPrecondition
    from server.store.layouts import KINDS
    two = tuple(dataclasses.replace(k, version=2, steps={1: k.steps[1]})
                if k.name == "profile_meta" else k for k in KINDS)
    stop = ("sms carrier STOP (21610)", False)
    records = {
        "carrier": _meta(("sms", "marketing", "signup", True, 10.0),
                         ("sms", "marketing", *stop, 50.0), ("sms", "transactional", *stop, 50.0),
                         ("sms", "marketing", "unsubscribe event", False, 50.0)),
        "beside": _meta(("sms", "marketing", "signup", True, 10.0),
                        ("sms", "marketing", *stop, 50.0),
                        ("sms", "marketing", "unsubscribe event (shared address)", False, 50.0)),
        "client": _meta(("sms", "marketing", "signup", True, 10.0),
                        ("sms", "transactional", *stop, 50.0),
                        ("sms", "marketing", "unsubscribe event", False, 60.0)),
        "mail": _meta(("email", "marketing", "unsubscribe event", False, 50.0)),
    }
    store = Store(tmp_path / "store", sync=False, layouts=two)
    for user, meta in records.items():
        store.put("profiles", keys.profile_meta_key(user), json.dumps(meta).encode())
    before = store.get("profiles", keys.profile_meta_key("mail"))
    store.close()
    store = Store(tmp_path / "store", sync=False)
    assert store.migrated == {"profile_meta": 2}
    assert store.get("profiles", keys.profile_meta_key("mail")) == before
    repo = ProfileRepository(store, ProfileSchema().layout())
    metas = dict(zip(records, repo.metas(list(records))))
    sources = {u: (m["consent"]["sms"]["marketing"]["source"], [h["source"] for h in
                                                              m["consent_history"]])
               for u, m in metas.items() if u != "mail"}
    assert sources == {
        "carrier": ("sms carrier STOP (21610) event",
                    ["signup", *[stop[0]] * 2, "sms carrier STOP (21610) event"]),
        "beside": ("sms carrier STOP (21610) event (shared address)",
                   ["signup", stop[0], "sms carrier STOP (21610) event (shared address)"]),
        "client": ("unsubscribe event", ["signup", stop[0], "unsubscribe event"])}
    assert [reopenable(metas[u], "sms", "marketing", True)
            for u in ("carrier", "beside", "client")] == [True, True, False]
    store.close()
    with pytest.raises(FailedPrecondition, match="profile_meta"):
        Store(tmp_path / "store", sync=False, layouts=two)


def test_a_21610_reported_again_stays_closed_after_the_layout_step(tmp_path):
    """Layout 2 after two 21610s for two texts (50, then 70): the second's carrier STOP found
    sms closed and wrote nothing, its `unsubscribe event` repeated the state, dated 70, with
    no history entry. A client's unsubscribe event tracked at 70 left the same bytes, so the
    step gives the 21610's source to the history's entry at 50 alone and leaves the current
    state the client's: a START keeps marketing closed (docs/messages.md)."""
    import dataclasses

    from server.contact.consent import reopenable
    from server.store.layouts import KINDS
    two = tuple(dataclasses.replace(k, version=2, steps={1: k.steps[1]})
                if k.name == "profile_meta" else k for k in KINDS)
    stop = ("sms carrier STOP (21610)", False)
    meta = _meta(("sms", "marketing", "signup", True, 10.0), ("sms", "marketing", *stop, 50.0),
                 ("sms", "transactional", *stop, 50.0),
                 ("sms", "marketing", "unsubscribe event", False, 50.0))
    meta["consent"]["sms"]["marketing"]["timestamp"] = 70.0  # the repeat: no entry of its own
    store = Store(tmp_path / "store", sync=False, layouts=two)
    store.put("profiles", keys.profile_meta_key("twice"), json.dumps(meta).encode())
    store.close()
    store = Store(tmp_path / "store", sync=False)
    got = ProfileRepository(store, ProfileSchema().layout()).metas(["twice"])[0]
    store.close()
    assert [h["source"] for h in got["consent_history"]][-1] == "sms carrier STOP (21610) event"
    assert got["consent"]["sms"]["marketing"] == {"opted_in": False, "source": "unsubscribe event",
                                                  "timestamp": 70.0}
    assert not reopenable(got, "sms", "marketing", True)


def test_the_layout_3_step_imports_nothing_of_messages():
    """The store is below messages/ (messages imports the store): the step reads its sources
    from contact.consent, so migrating loads no messages module (a one-time ~0.3 s import
    before, and a dependency pointing up). In a fresh interpreter, whose modules are its own."""
    import subprocess
    import sys
    code = ("import json, sys\n"
            "from server.store import layouts\n"
            "raw = json.dumps({'consent_history': [{'channel': 'sms', 'opted_in': False,"
            " 'source': s, 'timestamp': 5.0} for s in ('sms carrier STOP (21610)',"
            " 'unsubscribe event (shared address)')]}).encode()\n"
            "out = json.loads(layouts._meta_stop_events(raw))\n"
            "print(json.dumps([out['consent_history'][1]['source'],"
            " sorted(m for m in sys.modules if m.startswith('server.messages'))]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert json.loads(run.stdout) == ["sms carrier STOP (21610) event (shared address)", []]
