"""Events in storage form (built outside the write transaction) and the repository writing them."""
import time

import pytest

from contract.items import item_code
from protos.tailor.v1 import profile_pb2 as pb
from server.profiles import ProfileSchema, TrackedEvent
from server.profiles.records import EventRecords
from server.profiles.repository import ProfileRepository
from server.store import Store, keys
from server.store.keys import dedupe_key, event_key, feature_key
from server.store.tokens import user_token


def tracked(event_id, user="ann", item="", ts=None, type="click", channel="web"):
    msg = pb.Event(event_id=event_id, user_id=user, type=type, item_id=item,
                   timestamp=time.time() - 60 if ts is None else ts)
    return TrackedEvent(msg.event_id, msg.user_id, msg.type, channel, "", msg.item_id, 0.0,
                        msg.timestamp, {}, msg)


@pytest.fixture
def repo(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    yield ProfileRepository(store, ProfileSchema().layout())
    store.close()


def test_records_use_the_stored_key_conventions_and_the_filled_channel():
    events = [tracked("e1", item="i9", ts=1700000000.1234), tracked("e2", user="bo", ts=0.0005)]
    rec = EventRecords.build(events, [None, "shoes"])
    assert rec.event_keys == [event_key(e.user_id, e.timestamp, e.event_id) for e in events]
    assert rec.dedupe_keys == [dedupe_key("e1"), dedupe_key("e2")]
    assert rec.users() == (["ann", "bo"], [feature_key("ann"), feature_key("bo")], [0, 1])
    assert rec.user_tokens() == [user_token("ann"), user_token("bo")]
    assert rec.item == [item_code("i9"), -1] and rec.categories == [None, "shoes"]
    assert pb.Event.FromString(rec.payloads[0]).channel == "web"


def test_concat_and_take_keep_columns_aligned():
    a = EventRecords.build([tracked("a1"), tracked("a2", user="bo")], [None, None])
    b = EventRecords.build([tracked("b1", user="cy")], ["toys"])
    both = EventRecords.concat([a, b])
    assert len(both) == 3 and both.categories == [None, None, "toys"]
    picked = both.take([2, 0])
    assert picked.dedupe_keys == [dedupe_key("b1"), dedupe_key("a1")]
    assert picked.users() == (["cy", "ann"], [feature_key("cy"), feature_key("ann")], [0, 1])
    assert picked.user_tokens() == [user_token("cy"), user_token("ann")]


def test_a_repeated_id_in_one_batch_is_a_duplicate_and_touches_no_other_profile(repo):
    result = repo.ingest([tracked("x1"), tracked("x1", user="mallory"), tracked("x2"),
                          tracked("x2")], [None] * 4)
    # ann's repeat is a duplicate; mallory's event under ann's id is refused, not a duplicate
    assert (result.accepted, result.duplicates, result.taken) == ([0, 2], [3], [1])
    assert repo.states(["ann", "mallory"])[1] is None
    again = repo.ingest([tracked("x2"), tracked("x3")], [None] * 2)
    assert (again.accepted, again.duplicates) == ([1], [0])


def test_erasing_a_user_leaves_records_of_others_that_share_the_name_as_a_key_part(repo):
    """Users named like a meta key prefix ("category", "worker") own nothing in meta."""
    repo.ingest([tracked("c1", user="category", item="i1"), tracked("a1", item="i2")], [None, "shoes"])
    repo.store.put("meta", keys.worker_key(1), b"v1")
    assert repo.delete_user("category") == 3  # state record (with its seen-set), raw event, its dedupe key
    assert repo.store.get("meta", keys.category_key("shoes")) == b"0"
    assert repo.store.get("meta", keys.worker_key(1)) == b"v1"
    assert repo.read("category") == (None, None, [])
    assert repo.states(["ann"])[0] is not None


def test_retention_drops_old_events_with_their_dedupe_keys_only(repo):
    now = time.time()
    repo.ingest([tracked("old", ts=now - 7200), tracked("new", ts=now - 60)], [None, None])
    assert repo.drop_events_before(now - 3600) == 1
    assert [pb.Event.FromString(e).event_id for e in repo.read("ann")[2]] == ["new"]
    assert repo.ingest([tracked("old", ts=now - 7200)], [None]).accepted == [0]  # forgotten
    assert [pb.Event.FromString(e).event_id for chunk in repo.export(now - 600)
            for e in chunk] == ["new"]
