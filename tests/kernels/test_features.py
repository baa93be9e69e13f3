import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.events import DEFAULT_EVENT_WEIGHTS
from kernels import feature_layout as FL
from kernels import features as F
from kernels.feature_layout import DAY, FeatureLayout
from kernels.features import Events

TYPES = ("view", "click", "add_to_cart", "purchase", "email_sent", "email_open", "email_click",
         "sms_sent", "sms_click", "push_sent", "push_open", "unsubscribe")
CHANNELS = ("web", "app", "email", "sms", "push")
WEIGHTS = {n: w for n, w in DEFAULT_EVENT_WEIGHTS.items() if n in TYPES}
K = 6
T0 = 1.7e9
LAYOUT = FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, half_lives_s=(DAY, 7 * DAY, 30 * DAY),
                       recent_capacity=4)
RTOL = 1e-9
SETTINGS = settings(max_examples=60, deadline=None)

NATIVE = pytest.mark.parametrize("use_native", [True, False])


@st.composite
def streams(draw, max_events=40, n_items=8, with_tz=None):
    n = draw(st.integers(0, max_events))
    ints = lambda lo, hi: st.lists(st.integers(lo, hi), min_size=n, max_size=n)  # noqa: E731
    ts = draw(st.lists(st.floats(0, 40 * DAY, allow_nan=False), min_size=n, max_size=n))
    has_tz = draw(st.booleans()) if with_tz is None else with_tz
    return Events(
        type=draw(ints(0, len(TYPES) - 1)), channel=draw(ints(0, len(CHANNELS) - 1)),
        ts=T0 + np.asarray(ts, np.float64), item=draw(ints(-1, n_items - 1)),
        category=draw(ints(-1, K - 1)),
        value=draw(st.lists(st.floats(0, 500), min_size=n, max_size=n)),
        tz_offset_min=draw(ints(-720, 840)) if has_tz else None)


def chunked(draw, n):
    """Random split points of range(n)."""
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return [slice(a, b) for a, b in zip([0, *cuts], [*cuts, n])]


def apply_chunks(events, chunks, use_native, layout=LAYOUT):
    state = FL.new_state(layout)
    for c in chunks:
        F.update(layout, state, events.take(c), use_native=use_native)
    return state


def assert_states_close(a, b, rtol=RTOL):
    # Below the smallest normal double a decayed weight is zero in all but name: the order of
    # the multiplications (batched or not) decides whether it underflows to 0 or a denormal.
    np.testing.assert_allclose(a, b, rtol=rtol, atol=np.finfo(np.float64).tiny)


# ---------------------------------------------------------------------------------------------
# native == reference

@SETTINGS
@given(data=st.data())
def test_native_matches_reference_on_random_streams(data):
    ev = data.draw(streams())
    chunks = chunked(data.draw, len(ev))
    assert_states_close(apply_chunks(ev, chunks, True), apply_chunks(ev, chunks, False))


@SETTINGS
@given(data=st.data())
def test_update_many_native_matches_reference_and_per_user_updates(data):
    ev = data.draw(streams(max_events=60))
    n_users = data.draw(st.integers(1, 5))
    rows = np.asarray(data.draw(st.lists(st.integers(0, n_users - 1), min_size=len(ev),
                                         max_size=len(ev))), np.int64)
    native = FL.new_states(LAYOUT, n_users)
    ref = FL.new_states(LAYOUT, n_users)
    F.update_many(LAYOUT, native, rows, ev, use_native=True)
    F.update_many(LAYOUT, ref, rows, ev, use_native=False)
    assert_states_close(native, ref)
    for u in range(n_users):
        alone = F.update(LAYOUT, FL.new_state(LAYOUT), ev.take(np.flatnonzero(rows == u)))
        assert_states_close(native[u], alone)


@SETTINGS
@given(data=st.data())
def test_batching_does_not_change_the_state(data):
    ev = data.draw(streams())
    whole = apply_chunks(ev, [slice(0, len(ev))], True)
    one_by_one = apply_chunks(ev, [slice(i, i + 1) for i in range(len(ev))], True)
    assert_states_close(whole, one_by_one)


# ---------------------------------------------------------------------------------------------
# semantics

def expected_decayed(ev, ref, half_life):
    return np.exp2(-(ref - ev.ts) / half_life)


@NATIVE
@SETTINGS
@given(data=st.data())
def test_counts_money_and_rfm_match_a_plain_computation(data, use_native):
    ev = data.draw(streams())
    state = apply_chunks(ev, chunked(data.draw, len(ev)), use_native)
    v = LAYOUT.views(state)
    counts = np.zeros((len(TYPES), len(CHANNELS)))
    np.add.at(counts, (ev.type, ev.channel), 1.0)
    np.testing.assert_array_equal(v["counts"], counts)
    assert state[FL.N_EVENTS] == len(ev)
    if not len(ev):
        assert np.all(v["decayed"] == 0) and state[FL.REF_TS] == -np.inf
        return
    ref = ev.ts.max()
    assert state[FL.REF_TS] == ref and state[FL.FIRST_TS] == ev.ts.min()
    purchase = ev.type == LAYOUT.type_code("purchase")
    np.testing.assert_allclose(state[FL.MONETARY_ALL], ev.value[purchase].sum(), rtol=RTOL)
    for h, hl in enumerate(LAYOUT.half_lives_s):
        f = expected_decayed(ev, ref, hl)
        dec = np.zeros_like(counts)
        np.add.at(dec, (ev.type, ev.channel), f)
        np.testing.assert_allclose(v["decayed"][h], dec, rtol=RTOL, atol=1e-300)
        np.testing.assert_allclose(v["money"][h], (ev.value * f)[purchase].sum(), rtol=RTOL, atol=1e-300)
        w = np.asarray(LAYOUT.event_weights)[ev.type]
        cat = np.zeros(K)
        known = ev.category >= 0
        np.add.at(cat, ev.category[known], (w * f)[known])
        np.testing.assert_allclose(v["category"][h], cat, rtol=RTOL, atol=1e-300)
    feats = F.read_features(LAYOUT, state, now=ref)
    assert feats["frequency_all"] == purchase.sum()
    if purchase.any():
        assert feats["last_purchase_ts"] == ev.ts[purchase].max()
    else:
        assert np.isnan(feats["purchase_recency_s"])


@SETTINGS
@given(data=st.data())
def test_decayed_parts_do_not_depend_on_arrival_order(data):
    ev = data.draw(streams())
    perm = np.asarray(data.draw(st.permutations(range(len(ev)))), np.int64)
    a = apply_chunks(ev, chunked(data.draw, len(ev)), True)
    b = apply_chunks(ev.take(perm), chunked(data.draw, len(ev)), True)
    va, vb = LAYOUT.views(a), LAYOUT.views(b)
    for name in ("counts", "decayed", "money", "category", "hour"):
        np.testing.assert_allclose(va[name], vb[name], rtol=RTOL, atol=1e-300, err_msg=name)
    for slot in (FL.REF_TS, FL.FIRST_TS, FL.LAST_PURCHASE_TS, FL.N_EVENTS):
        assert a[slot] == b[slot]


@NATIVE
@pytest.mark.parametrize("h", range(3))
def test_one_event_decays_to_half_after_one_half_life(use_native, h):
    layout = FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, hour_half_life_s=LAYOUT.half_lives_s[h])
    state = FL.new_state(layout)
    purchase, web = layout.type_code("purchase"), layout.channel_code("web")
    F.update(layout, state, Events([purchase], [web], [T0], item=[3], category=[2], value=[40.0]),
             use_native=use_native)
    hl = layout.half_lives_s[h]
    for k, factor in ((0, 1.0), (1, 0.5), (2, 0.25)):
        f = F.read_features(layout, state, now=T0 + k * hl)
        np.testing.assert_allclose(f["counts_decayed"][h, purchase, web], factor, rtol=1e-12)
        np.testing.assert_allclose(f["monetary_decayed"][h], 40.0 * factor, rtol=1e-12)
        np.testing.assert_allclose(f["category_affinity"][h, 2], WEIGHTS["purchase"] * factor, rtol=1e-12)
        np.testing.assert_allclose(f["hour_of_week"].sum(), factor, rtol=1e-12)
        assert f["counts_all"][purchase, web] == 1 and f["monetary_all"] == 40.0
        assert f["recency_s"] == k * hl
    # a later event moves the reference time: the first one is stored already halved
    F.update(layout, state, Events([purchase], [web], [T0 + hl]), use_native=use_native)
    assert layout.views(state)["decayed"][h, purchase, web] == pytest.approx(1.5, rel=1e-12)
    # an out-of-order (older) event is added decayed; time does not go back
    F.update(layout, state, Events([purchase], [web], [T0]), use_native=use_native)
    assert state[FL.REF_TS] == T0 + hl
    assert layout.views(state)["decayed"][h, purchase, web] == pytest.approx(2.0, rel=1e-12)


def test_read_features_does_not_mutate_and_does_not_undecay():
    state = FL.new_state(LAYOUT)
    F.update(LAYOUT, state, Events([0, 0], [0, 0], [T0, T0 + DAY]))
    before = state.copy()
    late = F.read_features(LAYOUT, state, now=T0 + 5 * DAY)
    early = F.read_features(LAYOUT, state, now=T0)
    np.testing.assert_array_equal(state, before)
    np.testing.assert_allclose(early["counts_decayed"][0, 0, 0], 1.5)
    np.testing.assert_allclose(late["counts_decayed"][0, 0, 0], 1.5 / 16)
    assert early["recency_s"] == 0.0


@NATIVE
def test_hour_of_week_uses_local_time(use_native):
    monday = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()  # Monday 00:00 UTC
    click = LAYOUT.type_code("email_click")
    cases = [(monday, 0, 0), (monday + 3600 * 30, 0, 30), (monday, 60, 1), (monday, -60, 167),
             (monday + 3.5 * 86400, 0, 84)]
    for ts, tz, expected in cases:
        state = FL.new_state(LAYOUT)
        F.update(LAYOUT, state, Events([click], [2], [ts], tz_offset_min=[tz]),
                 use_native=use_native)
        hist = LAYOUT.views(state)["hour"]
        assert np.flatnonzero(hist).tolist() == [expected], (ts, tz)
        assert state[FL.TZ_OFFSET_MIN] == tz
        # the stored offset is used by later events that carry none
        F.update(LAYOUT, state, Events([click], [2], [ts]), use_native=use_native)
        assert hist[expected] == 2.0
    # non-engagement events do not count
    state = FL.new_state(LAYOUT)
    F.update(LAYOUT, state, Events([LAYOUT.type_code("email_sent")], [2], [monday]))
    assert LAYOUT.views(state)["hour"].sum() == 0


@NATIVE
def test_engagement_rates_use_the_beta_prior(use_native):
    layout = FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, rate_prior=(1.0, 9.0))
    email = layout.channel_code("email")
    types = ([layout.type_code("email_sent")] * 10 + [layout.type_code("email_open")] * 3
             + [layout.type_code("email_click")])
    state = F.update(layout, FL.new_state(layout),
                     Events(types, [email] * len(types), [T0] * len(types)), use_native)
    f = F.read_features(layout, state, now=T0)
    assert f["open_rate_all"][email] == pytest.approx(4 / 20)
    assert f["click_rate_all"][email] == pytest.approx(2 / 20)
    assert f["open_rate_decayed"][:, email] == pytest.approx([4 / 20] * 3)
    assert f["open_rate_all"][layout.channel_code("sms")] == pytest.approx(0.1)  # prior mean
    later = F.read_features(layout, state, now=T0 + 30 * DAY)
    assert later["open_rate_decayed"][2, email] == pytest.approx(2.5 / 15)


# ---------------------------------------------------------------------------------------------
# recent items

@NATIVE
@SETTINGS
@given(data=st.data())
def test_recent_items_merge_repeats_when_nothing_is_evicted(data, use_native):
    ev = data.draw(streams(n_items=LAYOUT.recent_capacity))
    state = apply_chunks(ev, chunked(data.draw, len(ev)), use_native)
    w = np.asarray(LAYOUT.event_weights)[ev.type]
    kept = (ev.item >= 0) & (w > 0)
    f = F.read_features(LAYOUT, state, now=T0)
    expected = {}
    for item, t, wi in zip(ev.item[kept], ev.ts[kept], w[kept]):
        old_w, old_t = expected.get(item, (0.0, -np.inf))
        expected[item] = (old_w + wi, max(old_t, t))
    assert sorted(f["recent_items"].tolist()) == sorted(expected)
    for item, t, wi in zip(f["recent_items"], f["recent_ts"], f["recent_weights"]):
        assert (wi, t) == pytest.approx(expected[item], rel=1e-12)
    assert np.all(np.diff(f["recent_ts"]) >= 0)
    # the encoder's view: oldest first, weight x 2^(-(t_last - t)/h)
    items, weights = F.recent_items(LAYOUT, state, half_life_s=7 * DAY, length=3)
    np.testing.assert_array_equal(items, f["recent_items"][-3:])
    if len(items):
        ts = f["recent_ts"][-3:]
        np.testing.assert_allclose(
            weights, f["recent_weights"][-3:] * np.exp2(-(ts.max() - ts) / (7 * DAY)), rtol=1e-12)
    # the same entries with each item's latest event time (GetProfile's recent items)
    e_items, e_weights, e_ts = F.recent_entries(LAYOUT, state, half_life_s=7 * DAY, length=3)
    np.testing.assert_array_equal(e_items, items)
    np.testing.assert_array_equal(e_weights, weights)
    assert e_ts.tolist() == [expected[i][1] for i in items.tolist()]
    no_views = np.asarray(LAYOUT.event_weights) * (np.arange(len(TYPES)) != TYPES.index("view"))
    c_items, c_weights = F.recent_items(LAYOUT, state, 7 * DAY, weights=no_views)
    e_items, e_weights, e_ts = F.recent_entries(LAYOUT, state, 7 * DAY, weights=no_views)
    np.testing.assert_array_equal(e_items, c_items)
    np.testing.assert_array_equal(e_weights, c_weights)
    assert e_ts.tolist() == [expected[i][1] for i in c_items.tolist()]


@NATIVE
@SETTINGS
@given(data=st.data())
def test_recent_items_keep_the_latest_distinct_items_at_capacity(data, use_native):
    ev = data.draw(streams(max_events=40, n_items=12))
    order = np.argsort(ev.ts, kind="stable")
    distinct = np.diff(ev.ts[order], prepend=-np.inf) > 0
    ev = ev.take(order[distinct])  # in order, distinct times
    state = apply_chunks(ev, chunked(data.draw, len(ev)), use_native)
    w = np.asarray(LAYOUT.event_weights)[ev.type]
    kept = (ev.item >= 0) & (w > 0)
    last_seen = {}
    for item, t in zip(ev.item[kept], ev.ts[kept]):
        last_seen[item] = t
    latest = sorted(last_seen, key=last_seen.get)[-LAYOUT.recent_capacity:]
    f = F.read_features(LAYOUT, state, now=T0)
    assert len(f["recent_items"]) == min(len(last_seen), LAYOUT.recent_capacity)
    assert f["recent_items"].tolist() == latest
    assert f["recent_ts"].tolist() == [last_seen[i] for i in latest]


def test_recent_items_drop_an_old_event_when_full():
    layout = FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, recent_capacity=2)
    state = F.update(layout, FL.new_state(layout), Events([0, 0], [0, 0], [T0 + 10, T0 + 20],
                                                          item=[1, 2]))
    F.update(layout, state, Events([0], [0], [T0 + 5], item=[3]))
    assert F.recent_items(layout, state, DAY)[0].tolist() == [1, 2]
    F.update(layout, state, Events([3], [0], [T0 + 15], item=[3]))  # newer than item 1
    items, weights = F.recent_items(layout, state, DAY)
    assert items.tolist() == [3, 2]
    np.testing.assert_allclose(weights, [WEIGHTS["purchase"] * 2 ** (-5 / DAY), 1.0])


# ---------------------------------------------------------------------------------------------
# serialization and validation

@SETTINGS
@given(data=st.data())
def test_bytes_round_trip(data):
    ev = data.draw(streams())
    state = apply_chunks(ev, [slice(0, len(ev))], True)
    raw = FL.to_bytes(state)
    assert len(raw) == LAYOUT.nbytes
    back = FL.from_bytes(LAYOUT, raw)
    np.testing.assert_array_equal(back, state)
    assert not back.flags.writeable
    buf = bytearray(raw)
    view = FL.from_bytes(LAYOUT, buf)
    assert np.shares_memory(view, np.frombuffer(buf, np.uint8))  # zero copy
    batch = FL.states_from_buffers(LAYOUT, [raw, None, memoryview(state)])
    np.testing.assert_array_equal(batch[0], state)
    np.testing.assert_array_equal(batch[1], FL.new_state(LAYOUT))
    np.testing.assert_array_equal(batch[2], state)
    F.update(LAYOUT, batch[1], ev)  # rows of the batch are writable states
    np.testing.assert_array_equal(batch[1], state)


def test_from_bytes_rejects_other_layouts():
    other = FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, half_lives_s=(DAY, 7 * DAY, 14 * DAY),
                          recent_capacity=4)
    assert other.size == LAYOUT.size and other.fingerprint != LAYOUT.fingerprint
    with pytest.raises(ValueError, match="fingerprint"):
        FL.from_bytes(LAYOUT, FL.to_bytes(FL.new_state(other)))
    with pytest.raises(ValueError, match="bytes"):
        FL.from_bytes(LAYOUT, b"\0" * 8 * (LAYOUT.size + 1))
    with pytest.raises(ValueError, match="buffers"):
        FL.states_from_buffers(LAYOUT, [b"\0" * 16])


@NATIVE
@pytest.mark.parametrize("field, value, argument", [
    ("type", len(TYPES), "events.type"), ("channel", -1, "events.channel"),
    ("category", K, "events.category"), ("item", -2, "events.item"),
    ("ts", np.nan, "events.ts"), ("value", np.inf, "events.value"),
    ("tz_offset_min", 2000, "events.tz_offset_min"),
])
def test_invalid_events_raise_and_leave_the_state_alone(use_native, field, value, argument):
    ok = dict(type=[0, 3], channel=[0, 1], ts=[T0, T0 + 1], item=[1, 2], category=[0, 1],
              value=[1.0, 2.0], tz_offset_min=[0, 0])
    state = F.update(LAYOUT, FL.new_state(LAYOUT), Events(**ok))
    before = state.copy()
    bad = {k: np.asarray(v) for k, v in ok.items()}
    bad[field] = bad[field].astype(np.float64 if field in ("ts", "value") else np.int64)
    bad[field][1] = value
    with pytest.raises(ValueError, match=argument):
        F.update(LAYOUT, state, Events(**bad), use_native=use_native)
    np.testing.assert_array_equal(state, before)
    with pytest.raises(ValueError, match="user_index"):
        F.update_many(LAYOUT, state.reshape(1, -1), [0, 1], Events(**ok), use_native=use_native)


@SETTINGS
@given(data=st.data())
def test_migrate_to_a_grown_vocabulary_equals_replaying_the_stream(data):
    ev = data.draw(streams())
    grown = FeatureLayout(TYPES + ("push_click",), CHANNELS + ("whatsapp",), K + 2, WEIGHTS,
                          half_lives_s=(7 * DAY, DAY, 30 * DAY), recent_capacity=4)
    old_state = apply_chunks(ev, [slice(0, len(ev))], True)
    migrated = FL.migrate(LAYOUT, grown, old_state)
    replayed = apply_chunks(ev, [slice(0, len(ev))], True, layout=grown)
    for name, value in grown.views(replayed).items():
        if not name.startswith("rc_"):  # recent-item slots are compared in time order below
            np.testing.assert_allclose(grown.views(migrated)[name], value, rtol=RTOL,
                                       err_msg=name)
    a, b = (F.read_features(grown, s, now=T0) for s in (migrated, replayed))
    for name in ("recent_items", "recent_ts", "recent_weights"):
        np.testing.assert_array_equal(a[name], b[name])
    F.update(grown, migrated, Events([len(TYPES)], [len(CHANNELS)], [T0], category=[K + 1]))
    small = FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, recent_capacity=2)
    kept = F.read_features(small, FL.migrate(LAYOUT, small, old_state), now=T0)["recent_items"]
    assert kept.tolist() == F.read_features(LAYOUT, old_state, now=T0)["recent_items"][-2:].tolist()


def test_layout_validation_and_size():
    with pytest.raises(ValueError, match="event_weights"):
        FeatureLayout(TYPES, CHANNELS, K, {"nope": 1.0})
    with pytest.raises(ValueError, match="half_lives_s"):
        FeatureLayout(TYPES, CHANNELS, K, WEIGHTS, half_lives_s=(0.0,))
    with pytest.raises(ValueError, match="channels"):
        FeatureLayout(TYPES, ("web", "web"), K, WEIGHTS)
    layout = FeatureLayout(TYPES, CHANNELS, 64, WEIGHTS)  # T=12, C=5, K=64, H=3, N=50
    assert layout.size == 16 + 60 + 180 + 3 + 192 + 168 + 150 + 600
    assert layout.nbytes == 8 * layout.size
    assert layout == FeatureLayout(TYPES, CHANNELS, 64, WEIGHTS)
    assert layout.fingerprint == FeatureLayout(TYPES, CHANNELS, 64, WEIGHTS).fingerprint


# ---------------------------------------------------------------------------------------------
# read-time weights and version-1 records

@SETTINGS
@given(data=st.data())
def test_read_time_weights_equal_writing_with_those_weights(data):
    ev = data.draw(streams())
    other = {n: data.draw(st.floats(0.1, 50.0)) for n in WEIGHTS if WEIGHTS[n] > 0}
    reweighted = FeatureLayout(TYPES, CHANNELS, K, other, recent_capacity=4)
    written = apply_chunks(ev, [slice(0, len(ev))], True)
    replayed = apply_chunks(ev, [slice(0, len(ev))], True, layout=reweighted)
    w = np.asarray(reweighted.event_weights)
    np.testing.assert_allclose(F.recent_weights(LAYOUT, written, w),
                               F.recent_weights(reweighted, replayed), rtol=1e-12)
    for a, b in zip(F.recent_items(LAYOUT, written, DAY, length=3, weights=w),
                    F.recent_items(reweighted, replayed, DAY, length=3)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@NATIVE
def test_a_valued_type_adds_its_value(use_native):
    types = TYPES + ("rating",)
    layout = FeatureLayout(types, CHANNELS, K, {**WEIGHTS, "rating": 2.0},
                           valued_types=("rating",))
    rating = layout.type_code("rating")
    state = F.update(layout, FL.new_state(layout), Events(
        [rating, rating, 0], [0, 0, 0], [T0, T0 + 1, T0 + 2], item=[5, 5, 6],
        value=[4.0, 1.5, 9.0]), use_native=use_native)
    items, weights = F.recent_items(layout, state, DAY, now=T0 + 2)
    assert items.tolist() == [5, 6]
    np.testing.assert_allclose(weights, [(4.0 + 1.5) * 2.0 * 2 ** (-1 / DAY), 1.0], rtol=1e-12)
    zero = np.zeros(len(types))
    assert F.recent_items(layout, state, DAY, weights=zero)[0].tolist() == []  # weight 0: left out
    with pytest.raises(ValueError, match="weights"):
        F.recent_weights(layout, state, zero[1:])
    for bad in (np.nan, np.inf, -1.0):
        with pytest.raises(ValueError, match="weights"):
            F.recent_items(layout, state, DAY, weights=np.r_[zero[1:], bad])


def test_upgrade_reads_version_1_records_and_keeps_their_weights():
    state = apply_chunks(Events([0, 3, 0], [0, 0, 0], [T0, T0 + 1, T0 + 2], item=[1, 2, 1]),
                         [slice(0, 3)], True)
    v1 = state.copy()  # what version 1 stored: summed weights in rc_w, nothing past it
    v1[FL.FORMAT], v1[FL.FINGERPRINT] = 1, LAYOUT._fingerprint_v1
    n = LAYOUT.offsets["rc_amt"]
    v1[LAYOUT.offsets["rc_w"]:n][:2] = [WEIGHTS["view"] * 2, WEIGHTS["purchase"]]
    v1[n:] = 0.0
    stranger = FL.new_state(FeatureLayout(TYPES, CHANNELS, K + 1, WEIGHTS, recent_capacity=4))
    states = np.stack([v1, state, stranger[:LAYOUT.size]])
    FL.upgrade(LAYOUT, states)
    FL.check_record(LAYOUT, states[:2], "states")
    np.testing.assert_array_equal(states[2], stranger[:LAYOUT.size])  # not ours: untouched
    np.testing.assert_allclose(F.recent_weights(LAYOUT, states[0]),
                               F.recent_weights(LAYOUT, states[1]))
    F.update(LAYOUT, states[0], Events([0], [0], [T0 + 3], item=[2]))
    assert F.recent_weights(LAYOUT, states[0]).tolist() == [2.0, WEIGHTS["purchase"] + 1.0]
    v1[n + 1] = 1.0
    with pytest.raises(ValueError, match="version-1"):
        FL.upgrade(LAYOUT, v1.reshape(1, -1).copy())


# ---------------------------------------------------------------------------------------------
# batch reads of the contact inputs

@SETTINGS
@given(data=st.data())
def test_batch_contact_reads_match_read_features(data):
    states = np.stack([apply_chunks(data.draw(streams()), [slice(None)], True) for _ in range(3)])
    now = T0 + data.draw(st.floats(0, 60 * DAY))
    hist, tz = F.hour_of_week_many(LAYOUT, states, now)
    for h in (None, 0, 2):
        counts = F.channel_counts_many(LAYOUT, states, now, h)
        for i, state in enumerate(states):
            f = F.read_features(LAYOUT, state, now)
            np.testing.assert_allclose(hist[i], f["hour_of_week"], rtol=1e-12)
            assert tz[i] == f["tz_offset_min"]
            for key in ("sends", "opens", "clicks"):
                expected = (f[f"{key}_all"] if h is None else
                            f["counts_decayed"][h][[LAYOUT.type_code(n) for n in getattr(
                                LAYOUT, f"{key[:-1]}_types")]].sum(axis=0))
                np.testing.assert_allclose(counts[key][i], expected, rtol=1e-12)


def test_batch_contact_reads_refuse_other_layouts_and_bad_half_life():
    other = FeatureLayout(TYPES, CHANNELS, K + 1, WEIGHTS)
    with pytest.raises(ValueError, match="states"):
        F.hour_of_week_many(LAYOUT, FL.new_states(other, 2)[:, :LAYOUT.size].copy(), T0)
    with pytest.raises(ValueError, match="half_life"):
        F.channel_counts_many(LAYOUT, FL.new_states(LAYOUT, 1), T0, 3)
