"""Seen items (issue 21): the live seen-set record, the exclusion policy, and Recommend through
a real server never giving back what a user bought, rated or recently viewed."""
import time

import numpy as np
import pytest

from contract.items import item_code
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from server.config import Settings
from server.models.bundle import load_bundle
from server.profiles import seen
from server.profiles.codec import join_state, split_state
from server.profiles.schema import EVENT_TYPES
from server.recommend.exclusion import SeenPolicy, excluded_rows
from server.store import keys
from tests.conftest import store_mentions
from tests.seen_bundle import without_seen_arrays

DAY = 86400.0
BIT = {t: 1 << i for i, t in enumerate(EVENT_TYPES)}


@pytest.fixture(scope="module")
def seen_bundle(demo_bundle):
    """The trained demo bundle: training writes the complete seen-sets (users.npz `seen_*`)."""
    return demo_bundle


@pytest.fixture(scope="module")
def loaded(seen_bundle):
    return load_bundle(seen_bundle)


@pytest.fixture
def settings(tmp_path, seen_bundle):
    return Settings(port=0, data_dir=tmp_path / "data", bundle=seen_bundle, grace_seconds=1.0,
                    lmdb_sync=False, bundle_poll_seconds=0.1)


# -- the record -----------------------------------------------------------------------------
def test_record_round_trips_and_merges_one_entry_per_item():
    s = seen.merge(seen.EMPTY, np.array([9, 3, 9]), np.array([1, 2, 4], np.uint32),
                   np.array([10.0, 5.0, 7.0]))
    assert s.codes.tolist() == [3, 9] and s.mask.tolist() == [2, 5] and s.ts.tolist() == [5.0, 10.0]
    back = seen.decode(seen.encode(s))
    assert back.codes.tolist() == [3, 9] and back.mask.tolist() == [2, 5] and back.ts.tolist() == [5.0, 10.0]
    more = seen.merge(back, np.array([2**52 + 1]), np.array([8], np.uint32), np.array([1.0]))
    assert more.codes.tolist() == [3, 9, 2**52 + 1]


def test_a_record_past_its_bound_keeps_the_latest_items_in_code_order():
    """Two users in one merge: the one past `most` keeps its latest items, the other all."""
    old = seen._merge_many([None, None], np.array([0, 0, 0, 0, 1]), np.array([5, 1, 9, 3, 7]),
                           np.full(5, 1, np.uint32), np.array([50.0, 10.0, 90.0, 30.0, 1.0]),
                           most=3)
    kept = seen.decode(old[0])
    assert kept.codes.tolist() == [3, 5, 9] and kept.ts.tolist() == [30.0, 50.0, 90.0]
    assert seen.decode(old[1]).codes.tolist() == [7]
    again = seen._merge_many([old[0]], np.array([0]), np.array([2]), np.full(1, 2, np.uint32),
                             np.array([95.0]), most=3)  # a new item pushes the oldest out
    assert seen.decode(again[0]).codes.tolist() == [2, 5, 9]


def test_record_with_another_layout_version_is_refused():
    raw = bytearray(seen.encode(seen.EMPTY))
    raw[0] = 2
    with pytest.raises(ValueError, match="layout version 2"):
        seen.decode(bytes(raw))


# -- the policy ------------------------------------------------------------------------------
def _live(loaded, entries):
    """A live seen-set from (bundle row, event type, age in days) entries."""
    ids = loaded.items["item_ids"]
    return seen.merge(seen.EMPTY, np.array([item_code(str(ids[r])) for r, _, _ in entries]),
                      np.array([BIT[t] for _, t, _ in entries], np.uint32),
                      np.array([NOW - age * DAY for _, _, age in entries]))


NOW = 1_900_000_000.0


def _rows(loaded, category, n, skip=0):
    code = loaded.category_code[category]
    return [int(r) for r in loaded.category_items[code][skip:skip + n]]


def test_policy_windows_forever_repeatable_and_unknown_users(loaded):
    policy = SeenPolicy.from_settings(Settings())
    books, grocery = _rows(loaded, "books", 6), _rows(loaded, "grocery", 2)
    live = _live(loaded, [(books[0], "purchase", 400), (books[1], "view", 40), (books[2], "view", 5),
                          (books[3], "email_sent", 1), (books[4], "rating", 900),
                          (books[5], "click", 29), (grocery[0], "purchase", 1)])
    out = excluded_rows(policy, loaded, ["new-user"], [live], [np.array([grocery[1]])], NOW)[0]
    assert out.tolist() == sorted([books[0], books[2], books[4], books[5], grocery[1]])
    assert excluded_rows(None, loaded, ["new-user"], [live], [np.zeros(0, np.int64)], NOW)[0].size == 0


def test_policy_settings_are_checked():
    with pytest.raises(ValueError, match="teleport"):
        SeenPolicy({"teleport": 3.0})
    with pytest.raises(ValueError, match="> 0"):
        SeenPolicy({"view": 0.0})


def test_bundle_seen_set_counts_every_training_row(loaded, demo_data):
    """Bundle users: their seen arrays (held-out rows too) under the policy, as of the cutoff."""
    policy = SeenPolicy({"purchase": np.inf}, repeatable=("grocery",))
    users = loaded.users["user_ids"][:50].tolist()
    cutoff = float(loaded.manifest.cutoff)
    out = excluded_rows(policy, loaded, users, [None] * 50, [np.zeros(0, np.int64)] * 50, cutoff)
    purchase_bit = 1 << loaded.manifest.raw["history"]["seen_event_types"].index("purchase")
    u = loaded.users
    grocery = loaded.category_code["grocery"]
    for j in range(50):
        lo, hi = u["seen_indptr"][j], u["seen_indptr"][j + 1]
        rows = u["seen_items"][lo:hi][(u["seen_mask"][lo:hi] & purchase_bit) != 0]
        assert out[j].tolist() == sorted(r for r in rows.tolist() if loaded.item_category[r] != grocery)


def test_one_user_alone_gets_what_the_batch_gives_them(loaded):
    """`excluded_rows` of one user (slices) against the batch (one array of keys): the same rows
    for bundle users with live sets, requested rows (some already seen: duplicates), live codes
    outside the catalog, unknown users, and no policy."""
    rng = np.random.default_rng(3)
    users = loaded.users["user_ids"][:40].tolist() + ["new-user", "other-new-user"]
    n, cutoff, u = loaded.n_items, float(loaded.manifest.cutoff), loaded.users
    types = list(BIT)
    outside = (np.array([item_code("no-such-item")]), np.array([BIT["purchase"]], np.uint32),
               np.array([NOW]))
    live = [None if j % 4 == 0 else seen.merge(_live(loaded, [
        (int(r), types[int(t)], float(a)) for r, t, a in zip(
            rng.integers(0, n, 6), rng.integers(0, len(types), 6), rng.uniform(0, 60, 6))]), *outside)
        for j in range(len(users))]
    requested = [np.concatenate([rng.integers(0, n, j % 3),
                                 u["seen_items"][u["seen_indptr"][j]:u["seen_indptr"][j] + 2]
                                 if j < 40 else []]).astype(np.int64) for j in range(len(users))]
    for policy in (SeenPolicy.from_settings(Settings()), None):
        for now in (cutoff, NOW):
            together = excluded_rows(policy, loaded, users, live, requested, now)
            assert sum(len(r) for r in together) > (3 * len(users) if policy else 0)
            for j, user in enumerate(users):
                alone = excluded_rows(policy, loaded, [user], [live[j]], [requested[j]], now)[0]
                assert alone.dtype == together[j].dtype == np.int64
                np.testing.assert_array_equal(alone, together[j])
                assert len(np.unique(alone)) == len(alone)


def test_bundle_without_seen_arrays_excludes_its_history_for_good(demo_bundle, tmp_path):
    old = load_bundle(without_seen_arrays(demo_bundle, tmp_path / demo_bundle.name))
    assert "seen_indptr" not in old.users
    user = old.users["user_ids"][3]
    far = float(old.manifest.cutoff) + 1000 * DAY
    out = excluded_rows(SeenPolicy({}, repeatable=()), old, [user], [None], [np.zeros(0, np.int64)], far)[0]
    assert out.tolist() == sorted(set(old.history(user)[0].tolist()))
    timed = SeenPolicy({}, unknown_days=30.0, repeatable=())
    assert excluded_rows(timed, old, [user], [None], [np.zeros(0, np.int64)], far)[0].size == 0


# -- through a real server --------------------------------------------------------------------
@pytest.fixture
def stubs(channel):
    return ppb_grpc.ProfileServiceStub(channel), pb_grpc.RecommendationServiceStub(channel)


async def _track(profiles, user, entries, prefix="e"):
    """entries: (item id, type, age in days); one TrackEvents call per 100 events."""
    events = [ppb.Event(event_id=f"{prefix}-{user}-{n}", user_id=user, type=t, item_id=i,
                        value=4.0 if t == "rating" else 0.0, timestamp=time.time() - age * DAY)
              for n, (i, t, age) in enumerate(entries)]
    for start in range(0, len(events), 100):
        reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=events[start:start + 100]))
        assert reply.accepted == len(events[start:start + 100])


async def test_user_with_200_interactions_never_gets_an_excluded_item(stubs, loaded):
    """200 events on 200 items (more than the 50-item recent window): none comes back, in any
    category, while views older than 30 days and email sends may."""
    profiles, recs = stubs
    ids = loaded.items["item_ids"]
    grocery = loaded.category_code["grocery"]
    rows = [int(r) for r in loaded.popular if loaded.item_category[r] != grocery][:200]
    kinds = ["purchase", "rating", "view", "click", "add_to_cart"]
    entries = [(str(ids[r]), kinds[n % 5], 1 + n % 20) for n, r in enumerate(rows)]
    await _track(profiles, "heavy-live", entries)
    banned = {i for i, _, _ in entries}
    names = list(loaded.category_code)
    for request in [pb.RecommendRequest(user_id="heavy-live", k=50)] + [
            pb.RecommendRequest(user_id="heavy-live", k=10, categories=[c]) for c in names]:
        reply = await recs.Recommend(request)
        got = [i.item_id for i in reply.items]
        assert not set(got) & banned, request.categories
        assert len(got) == len(set(got))
    full = await recs.Recommend(pb.RecommendRequest(user_id="heavy-live", k=50))
    assert len(full.items) == 50 and not full.cold_start


async def test_a_message_sent_about_an_item_does_not_restart_its_exclusion(stubs, loaded):
    """Sends are the shop's doing, not the user's (training drops these weight-0 events from the
    bundle's seen-set): items viewed 40 days ago and then emailed, texted or pushed today come
    back; one clicked today does not."""
    profiles, recs = stubs
    ids = loaded.items["item_ids"]
    books = [str(ids[r]) for r in loaded.category_items[loaded.category_code["books"]]]
    picked = books[:4]
    await _track(profiles, "mailed", [(i, "view", 40) for i in picked])
    ask = pb.RecommendRequest(user_id="mailed", k=1000, categories=["books"])
    before = {i.item_id for i in (await recs.Recommend(ask)).items}
    assert set(picked) <= before
    await _track(profiles, "mailed", [(picked[0], "email_sent", 0), (picked[1], "sms_sent", 0),
                                      (picked[2], "push_sent", 0), (picked[3], "click", 0)],
                 prefix="sent")
    after = {i.item_id for i in (await recs.Recommend(ask)).items}
    assert set(picked[:3]) <= after and picked[3] not in after


@pytest.fixture
def small_seen(settings):
    settings.limits = settings.limits.model_copy(update={"seen_items": 1000})
    return settings


async def test_a_purchase_stays_out_when_the_seen_set_is_full(small_seen, stubs, loaded):
    """A full live seen-set drops its oldest items, but keeps those excluded for good: a bought
    item does not come back because 1,000 other items were viewed after it."""
    profiles, recs = stubs
    first = await recs.Recommend(pb.RecommendRequest(user_id="browser", k=10))
    bought = first.items[0].item_id
    await _track(profiles, "browser", [(bought, "purchase", 40)])
    await _track(profiles, "browser", [(f"elsewhere-{n}", "view", 20 - n / 100) for n in range(1000)],
                 prefix="v")
    again = await recs.Recommend(pb.RecommendRequest(user_id="browser", k=50))
    assert bought not in {i.item_id for i in again.items}


async def test_repeatable_category_comes_back_and_others_do_not(stubs, loaded):
    profiles, recs = stubs
    ids = loaded.items["item_ids"]
    grocery = [str(ids[r]) for r in loaded.category_items[loaded.category_code["grocery"]]]
    books = [str(ids[r]) for r in loaded.category_items[loaded.category_code["books"]]]
    await _track(profiles, "shopper", [(i, "purchase", 2) for i in grocery + books])
    again = await recs.Recommend(pb.RecommendRequest(user_id="shopper", k=5, categories=["grocery"]))
    assert len(again.items) == 5 and {i.item_id for i in again.items} <= set(grocery)
    none = await recs.Recommend(pb.RecommendRequest(user_id="shopper", k=5, categories=["books"]))
    assert not {i.item_id for i in none.items} & set(books)


async def test_a_filter_whose_items_are_all_excluded_answers_no_item(stubs, loaded):
    """k is a most: a category of 70 items answers 70 of k=1000, those left once the seen-set
    and exclude_item_ids take theirs, and none (status OK, not cold start) once every one of
    them is bought (recommendation.proto, `k`)."""
    profiles, recs = stubs
    ids = loaded.items["item_ids"]
    books = [str(ids[r]) for r in loaded.category_items[loaded.category_code["books"]]]
    ask = pb.RecommendRequest(user_id="bookworm", k=1000, categories=["books"])
    assert len((await recs.Recommend(ask)).items) == len(books)
    await _track(profiles, "bookworm", [(i, "view", 1) for i in books[:-2]])
    await _track(profiles, "bookworm", [(books[0], "click", 0)], prefix="c")
    ask.exclude_item_ids.append(books[-1])
    left = await recs.Recommend(ask)
    assert [i.item_id for i in left.items] == [books[-2]] and not left.cold_start
    await _track(profiles, "bookworm", [(books[-2], "purchase", 0)], prefix="p")
    none = await recs.Recommend(ask)
    assert len(none.items) == 0 and not none.cold_start and none.model_version


async def test_bundle_users_get_no_excluded_seen_item_in_their_top_10(stubs, loaded):
    """Known users whose seen arrays hold purchases: none of those comes back (any age)."""
    _, recs = stubs
    u, types = loaded.users, loaded.manifest.raw["history"]["seen_event_types"]
    bit = 1 << types.index("purchase")
    grocery = loaded.category_code["grocery"]
    checked = 0
    for j in range(len(u["user_ids"])):
        lo, hi = u["seen_indptr"][j], u["seen_indptr"][j + 1]
        bought = u["seen_items"][lo:hi][(u["seen_mask"][lo:hi] & bit) != 0]
        bought = {str(loaded.items["item_ids"][r]) for r in bought if loaded.item_category[r] != grocery}
        if len(bought) < 3:
            continue
        reply = await recs.Recommend(pb.RecommendRequest(user_id=str(u["user_ids"][j]), k=10))
        assert not {i.item_id for i in reply.items} & bought
        checked += 1
        if checked == 30:
            break
    assert checked == 30


async def test_seen_record_is_erased_with_the_user(stubs, tailor_server, loaded):
    profiles, _ = stubs
    await _track(profiles, "erase-me", [(str(loaded.items["item_ids"][0]), "purchase", 1)])
    key = keys.feature_key("erase-me")
    assert split_state(tailor_server.store.get("profiles", key))[1] is not None
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="erase-me"))
    assert tailor_server.store.get("profiles", key) is None
    assert not store_mentions(tailor_server.store, b"erase-me")


async def test_the_user_cache_forgets_an_erased_user(stubs, tailor_server, loaded):
    """The cache holds a served user's history rows, vector and candidates by user id: the
    erasure takes them with everything else."""
    profiles, recs = stubs
    await _track(profiles, "cached", [(str(loaded.items["item_ids"][r]), "view", 1)
                                      for r in loaded.popular[:5]])
    assert not (await recs.Recommend(pb.RecommendRequest(user_id="cached", k=5))).cold_start
    cache = tailor_server.recommender.cache
    assert "cached" in cache
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="cached"))
    assert "cached" not in cache


def test_live_record_is_uncapped_and_legacy_profiles_fall_back_to_recent_items(tmp_path):
    """300 items on one user: all in the seen record (the recent window keeps 50); a profile
    written before seen records existed reads as its recent items, of unknown type."""
    from server.profiles.events import TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    repo = ProfileRepository(store, ProfileSchema().layout())
    now = time.time()
    events = [TrackedEvent(f"e{n}", "u1", "view" if n % 2 else "purchase", "web", "", f"item-{n}",
                           0.0, now - 1000 + n) for n in range(300)]
    repo.ingest(events, [None] * 300)
    got = [s for _, s in repo.states_and_seen(["u1", "nobody"])]
    assert got[1] is None
    assert sorted(got[0].codes.tolist()) == sorted(item_code(f"item-{n}") for n in range(300))
    assert got[0].codes.tolist() == sorted(got[0].codes.tolist())
    by_code = dict(zip(got[0].codes.tolist(), got[0].mask.tolist()))
    assert by_code[item_code("item-4")] == BIT["purchase"] and by_code[item_code("item-5")] == BIT["view"]
    key = keys.feature_key("u1")
    store.put("profiles", key, join_state(split_state(store.get("profiles", key))[0], None))
    legacy = repo.states_and_seen(["u1"])[0][1]
    assert len(legacy) == 50 and set(legacy.mask.tolist()) == {int(seen.UNKNOWN_BIT)}
    assert set(legacy.codes.tolist()) == {item_code(f"item-{n}") for n in range(250, 300)}
    store.close()


async def test_a_damaged_profile_fails_its_own_history_only(stubs, loaded, tailor_server):
    """A live state whose recent times are not finite (a damaged record) gives its user no
    history (the popular items), and the other users of the batch theirs."""
    profiles, _ = stubs
    ids = loaded.items["item_ids"]
    await _track(profiles, "damaged", [(str(ids[r]), "view", 1) for r in loaded.popular[:3]])
    await _track(profiles, "fine", [(str(ids[r]), "view", 1) for r in loaded.popular[3:6]])
    p = tailor_server.profiles
    bad, good = p.states(["damaged", "fine"])
    bad = bad.copy()
    p.layout.views(bad)["rc_ts"][:] = np.nan
    bundle = tailor_server.registry.current()
    hist = p.history_of(bundle, ["damaged", "fine"], states=[bad, good])
    assert hist[0] is None and len(hist[1][0]) == 3


def test_ingestion_keeps_a_live_record_within_its_bound(tmp_path):
    from server.profiles.events import TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    repo = ProfileRepository(store, ProfileSchema().layout(), seen_items=100)
    now = time.time()
    for start in (0, 150):  # two batches: the bound holds across them
        repo.ingest([TrackedEvent(f"e{n}", "u1", "view", "web", "", f"item-{n}", 0.0, now - 1000 + n)
                     for n in range(start, start + 150)], [None] * 150)
    got = repo.states_and_seen(["u1"])[0][1]
    assert sorted(got.codes.tolist()) == sorted(item_code(f"item-{n}") for n in range(200, 300))
    store.close()
