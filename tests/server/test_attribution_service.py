"""AttributionService through a real server: given paths (unary, streamed, ChannelAttribution
rows), every bad-input case, and journeys built from events tracked through ProfileService."""
import time

import grpc
import numpy as np
import pytest
import pytest_asyncio

from kernels.attribution import DAY, Paths, attribute
from protos.tailor.v1 import attribution_pb2 as pb
from protos.tailor.v1 import attribution_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc

# Three hand-checked paths: (channels, conversions, value, nulls)
PATHS = [(["a", "b", "c"], 2.0, 20.0, 0.0), (["direct", "a", "direct"], 1.0, 6.0, 0.0),
         (["b"], 1.0, 4.0, 3.0)]
KERNEL_NAMES = {pb.FIRST_TOUCH: "first", pb.LAST_TOUCH: "last",
                pb.LAST_NON_DIRECT: "last_non_direct", pb.LINEAR: "linear",
                pb.POSITION_BASED: "position", pb.MARKOV: "markov", pb.SHAPLEY: "shapley"}
# (conversions, value) per channel, computed by hand from PATHS
HAND = {
    pb.FIRST_TOUCH: {"a": (2, 20), "direct": (1, 6), "b": (1, 4), "c": (0, 0)},
    pb.LAST_TOUCH: {"c": (2, 20), "direct": (1, 6), "b": (1, 4), "a": (0, 0)},
    pb.LAST_NON_DIRECT: {"c": (2, 20), "a": (1, 6), "b": (1, 4), "direct": (0, 0)},
    pb.LINEAR: {"a": (1, 26 / 3), "b": (5 / 3, 32 / 3), "c": (2 / 3, 20 / 3), "direct": (2 / 3, 4)},
    pb.POSITION_BASED: {"a": (0.8 + 0.2, 8 + 1.2), "b": (0.4 + 1, 4 + 4), "c": (0.8, 8),
                        "direct": (0.8, 4.8)},
}


@pytest.fixture(scope="module")
def attribution_settings(tmp_path_factory):
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path_factory.mktemp("attribution") / "data",
                    grace_seconds=1.0, lmdb_sync=False)


@pytest_asyncio.fixture(scope="module")
async def attribution_server(attribution_settings):
    from server.app import TailorServer
    server = TailorServer(attribution_settings)
    await server.start()
    yield server
    await server.stop(grace=0.5)


@pytest_asyncio.fixture(scope="module")
async def server_channel(attribution_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{attribution_server.port}") as ch:
        yield ch


@pytest.fixture
def stub(server_channel):
    return pb_grpc.AttributionServiceStub(server_channel)


def request(model, paths=PATHS, **spec):
    return pb.AttributeRequest(spec=pb.ModelSpec(model=model, **spec), paths=[
        pb.Path(channels=ch, conversions=c, value=v, nulls=n) for ch, c, v, n in paths])


def credits(resp) -> dict:
    return {c.channel: (c.conversions, c.value) for c in resp.credits}


def approx(credit: dict) -> dict:
    return {name: pytest.approx(pair) for name, pair in credit.items()}


def kernel(model: str, paths=PATHS, **kw):
    enc = Paths.from_sequences([p[0] for p in paths], [p[1] for p in paths],
                               [p[2] for p in paths], [p[3] for p in paths])
    return enc, attribute(enc, model, **kw)


def assert_matches_kernel(resp, res):
    got = credits(resp)
    assert set(got) == set(res.channels)
    for i, name in enumerate(res.channels):
        assert got[name] == pytest.approx((res.conversions[i], res.value[i]), abs=1e-9)


# -- given paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(HAND))
async def test_heuristics_match_hand_computed_credits(stub, model):
    resp = await stub.Attribute(request(model))
    got = credits(resp)
    assert set(got) == set(HAND[model])
    for name, expected in HAND[model].items():
        assert got[name] == pytest.approx(expected), name
    assert (resp.paths, resp.total_conversions, resp.total_value) == (3, 4.0, 30.0)
    assert resp.model == model


@pytest.mark.parametrize("model,spec,kw", [
    (pb.POSITION_BASED, {"position_first": 0.3, "position_last": 0.5},
     {"position_shares": (0.3, 0.5)}),
    (pb.LAST_NON_DIRECT, {"direct_channel": "a"}, {"direct": "a"}),
    (pb.MARKOV, {"order": 2}, {"order": 2}),
    (pb.MARKOV, {"order": 4}, {"order": 4}),
    (pb.SHAPLEY, {}, {}),
    (pb.SHAPLEY, {"shapley_form": pb.RATE}, {"shapley_form": "rate"}),
    (pb.SHAPLEY, {"shapley_form": pb.ORDERED}, {"shapley_form": "ordered"}),
])
async def test_models_match_the_kernel(stub, model, spec, kw):
    resp = await stub.Attribute(request(model, **spec))
    _, res = kernel(KERNEL_NAMES[model], **kw)
    assert_matches_kernel(resp, res)
    if kw.get("shapley_form") == "ordered":
        ranks = {c.channel: list(c.rank_conversions) for c in resp.credits}
        for i, name in enumerate(res.channels):
            assert ranks[name] == pytest.approx(res.details["rank_conversions"][i].tolist())


async def test_markov_order_one_by_hand_with_transition_matrix(stub):
    paths = [(["a", "b"], 1.0, 10.0, 0.0), (["b"], 0.0, 0.0, 1.0)]
    resp = await stub.Attribute(request(pb.MARKOV, paths, transition_matrix=True))
    # P(conv) = 1/2; without a: 1/4 (removal effect 1/2); without b: 0 (removal effect 1)
    assert credits(resp) == approx({"a": (1 / 3, 10 / 3), "b": (2 / 3, 20 / 3)})
    effects = {c.channel: c.removal_effect for c in resp.credits}
    assert effects == {"a": pytest.approx(0.5), "b": pytest.approx(1.0)}
    assert resp.conversion_probability == pytest.approx(0.5)
    tm = resp.transition_matrix
    assert list(tm.states) == ["(start)", "a", "b", "(conversion)", "(null)"]
    probs = {(tm.states[r], tm.states[c]): p for r, c, p in zip(tm.row, tm.col, tm.probability)}
    assert probs == pytest.approx({("(start)", "a"): 0.5, ("(start)", "b"): 0.5, ("a", "b"): 1.0,
                                   ("b", "(conversion)"): 0.5, ("b", "(null)"): 0.5,
                                   ("(conversion)", "(conversion)"): 1.0,
                                   ("(null)", "(null)"): 1.0})


async def test_time_decay_halves_per_half_life(stub):
    t0 = 1.7e9
    req = pb.AttributeRequest(spec=pb.ModelSpec(model=pb.TIME_DECAY, half_life_seconds=DAY),
                              paths=[pb.Path(path="a > b > a", conversions=7, value=70,
                                             timestamps=[t0, t0 + DAY, t0 + 2 * DAY])])
    resp = await stub.Attribute(req)  # weights 1/4, 1/2, 1 of 7/4
    assert credits(resp) == {"a": pytest.approx((5, 50)), "b": pytest.approx((2, 20))}
    req.spec.half_life_seconds = 0  # default: 7 days
    enc = Paths.from_sequences([["a", "b", "a"]], [7], [70],
                               timestamps=[[t0, t0 + DAY, t0 + 2 * DAY]])
    assert_matches_kernel(await stub.Attribute(req), attribute(enc, "time_decay"))


async def test_per_path_credits_split_each_path(stub):
    resp = await stub.Attribute(request(pb.LINEAR, path_credits=True))
    got = [(p.path_index, list(p.touch_conversions), list(p.touch_value))
           for p in resp.path_credits]
    assert got == [(0, pytest.approx([2 / 3] * 3), pytest.approx([20 / 3] * 3)),
                   (1, pytest.approx([1 / 3] * 3), pytest.approx([2.0] * 3)),
                   (2, pytest.approx([1.0]), pytest.approx([4.0]))]
    markov = await stub.Attribute(request(pb.MARKOV, path_credits=True))
    enc, res = kernel("markov", path_credits=True)
    flat = np.concatenate([p.touch_conversions for p in markov.path_credits])
    rows = np.repeat(np.arange(enc.n_paths), enc.lengths)
    assert flat == pytest.approx(res.touch_share * enc.conversions[rows])
    assert not (await stub.Attribute(request(pb.MARKOV))).path_credits


async def test_channelattribution_rows_equal_paths(stub):
    rows = pb.AttributeRequest(spec=pb.ModelSpec(model=pb.MARKOV), channelattribution_rows=[
        "path;total_conversions;total_conversion_value;total_null", "a > b > c;2;20;0",
        "direct > a > direct;1;6;0", "b;1;4;3"])
    assert credits(await stub.Attribute(rows)) == credits(await stub.Attribute(request(pb.MARKOV)))


async def test_streamed_input_equals_unary_input(stub):
    rng = np.random.default_rng(3)
    names = ["email", "sms", "push", "web", "direct"]
    paths = [([names[i] for i in rng.integers(0, 5, rng.integers(1, 6))], float(rng.integers(0, 3)),
              float(rng.integers(0, 50)), float(rng.integers(0, 4))) for _ in range(300)]
    spec = pb.ModelSpec(model=pb.MARKOV, order=2, path_credits=True)
    unary = await stub.Attribute(request(pb.MARKOV, paths, order=2, path_credits=True))

    async def messages():
        for k in range(0, 300, 70):
            chunk = paths[k:k + 70]
            half = len(chunk) // 2  # second half as ChannelAttribution rows
            msg = request(pb.MARKOV, chunk[:half])
            msg.channelattribution_rows.extend(f"{' > '.join(ch)};{c};{v};{n}"
                                               for ch, c, v, n in chunk[half:])
            if k:
                msg.ClearField("spec")
            else:
                msg.spec.CopyFrom(spec)
            yield msg
    streamed = await stub.AttributeStream(messages())
    assert credits(streamed) == approx(credits(unary))
    assert streamed.paths == unary.paths == 300
    flat = [np.concatenate([p.touch_conversions for p in r.path_credits])
            for r in (streamed, unary)]
    assert flat[0] == pytest.approx(flat[1])
    assert [p.path_index for p in streamed.path_credits] == list(range(300))


async def test_sampled_shapley_past_the_exact_limit_states_its_error(stub):
    paths = [([f"c{i}", f"c{(i + 1) % 21}"], 1.0 + i % 3, 10.0, 1.0) for i in range(21)]
    resp = await stub.Attribute(request(pb.SHAPLEY, paths, shapley_form=pb.RATE,
                                        shapley_samples=400, seed=5))
    assert resp.shapley_samples == 400
    assert sum(c.conversions for c in resp.credits) == pytest.approx(resp.total_conversions)
    assert all(c.stderr > 0 for c in resp.credits)
    _, res = kernel("shapley", paths, shapley_form="rate", samples=400, seed=5)
    assert_matches_kernel(resp, res)


async def test_ordered_shapley_past_its_table_limit_is_refused_before_it_is_built(stub):
    # its per-rank credits are channels x (most distinct channels of one path) cells, two
    # doubles each in the answer: one path of 3,000 distinct channels (a 20 KB request) took
    # 700 MB in the server and then failed to send 144 MB; 10,000 would take gigabytes
    from server.limits import DEFAULT_LIMITS
    n = 1001  # 1,002,001 cells, past Limits.attribution_rank_cells (1,000,000)
    assert n * n > DEFAULT_LIMITS.attribution_rank_cells >= (n - 1) * (n - 1)
    one_path = [([f"c{i}" for i in range(n)], 1.0, 2.0, 0.0)]
    with pytest.raises(grpc.RpcError) as err:
        await stub.Attribute(request(pb.SHAPLEY, one_path, shapley_form=pb.ORDERED), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("spec.shapley_form: "), err.value.details()
    assert "1001 channels x 1001 ranks" in err.value.details()
    below = [([f"c{i}" for i in range(300)], 1.0, 2.0, 0.0)]  # 90,000 cells: answered
    resp = await stub.Attribute(request(pb.SHAPLEY, below, shapley_form=pb.ORDERED), timeout=60)
    assert len(resp.credits) == 300 and len(resp.credits[7].rank_conversions) == 300
    assert resp.credits[7].rank_conversions[7] == pytest.approx(1 / 300)  # c7 is 8th of 300


async def test_path_credits_that_cannot_fit_one_message_are_refused_before_computing(tmp_path):
    # the per-touch credits of 20,000 paths of 4 touches take at least 16 bytes a touch:
    # 1.28 MB, past a 1 MiB message limit. The server computed them (3,000,000 paths under the
    # default 64 MiB: 17 s and about 1.9 GB), then failed to send them: RESOURCE_EXHAUSTED
    # "SERVER: Sent message larger than max", naming no field
    from server.app import TailorServer
    from server.config import Settings
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0,
                                   lmdb_sync=False, grpc_max_message_bytes=1 << 20))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            small = pb_grpc.AttributionServiceStub(ch)
            paths = [(["a", "b", "c", "d"], 1.0, 2.0, 1.0)] * 20_000
            with pytest.raises(grpc.RpcError) as err:
                await small.Attribute(request(pb.LINEAR, paths, path_credits=True), timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("spec.path_credits: "), err.value.details()
            assert "80000 touches" in err.value.details()
            resp = await small.Attribute(request(pb.LINEAR, paths), timeout=60)  # credits only
            assert sum(c.conversions for c in resp.credits) == pytest.approx(20_000)
            resp = await small.Attribute(request(pb.LINEAR, paths[:1000], path_credits=True))
            assert len(resp.path_credits) == 1000
    finally:
        await server.stop(grace=0.5)


async def test_stored_journeys_that_cannot_fit_one_message_are_refused_before_computing(
        tmp_path):
    # AttributeStored with path_credits also answers the journeys (stored_paths: each touch's
    # label and, for TIME_DECAY, its time), which the check above did not count: 1,000
    # journeys of 40 views each passed it (0.64 MB of credits under a 1 MiB limit), were
    # computed, then failed RESOURCE_EXHAUSTED "SERVER: Sent message larger than max (1195918
    # vs. 1048576)", naming no field
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", grpc_max_message_bytes=1 << 20)
    t = time.time() - 3600

    def journeys(users):
        return [ppb.Event(event_id=f"{u}.{k}", user_id=u, type="view", timestamp=t - 100 + k)
                for u in users for k in range(40)] + [
            ppb.Event(event_id=f"{u}.p", user_id=u, type="purchase", value=5.0, timestamp=t)
            for u in users]
    spec = pb.ModelSpec(model=pb.TIME_DECAY, path_credits=True)
    async with serving(settings) as (_, ch):
        profiles, small = ppb_grpc.ProfileServiceStub(ch), pb_grpc.AttributionServiceStub(ch)
        events = journeys([f"early{i}" for i in range(500)])
        for lo in range(0, len(events), 10_000):
            reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=events[lo:lo + 10_000]))
            assert reply.accepted == len(events[lo:lo + 10_000])
        half = await small.AttributeStored(pb.AttributeStoredRequest(
            spec=spec, start_time=int(t - 10), end_time=int(t + 10)))
        assert len(half.stored_paths) == 500 and len(half.path_credits) == 500
        events = journeys([f"late{i}" for i in range(500)])
        for lo in range(0, len(events), 10_000):
            await profiles.TrackEvents(ppb.TrackEventsRequest(events=events[lo:lo + 10_000]))
        with pytest.raises(grpc.RpcError) as err:
            await small.AttributeStored(pb.AttributeStoredRequest(
                spec=spec, start_time=int(t - 10), end_time=int(t + 10)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("spec.path_credits: per-touch credits of 40000 "
                                              "touches"), err.value.details()
        assert "for a shorter time range" in err.value.details()
        whole = await small.AttributeStored(pb.AttributeStoredRequest(
            spec=pb.ModelSpec(model=pb.TIME_DECAY), start_time=int(t - 10), end_time=int(t + 10)))
        assert whole.total_conversions == 1000  # credits only: answered


async def test_a_transition_matrix_that_cannot_fit_one_message_is_refused(tmp_path):
    # MARKOV order 4 with transition_matrix over 9,000 paths of 6 touches (30 channels): a
    # 0.43 MB request whose matrix (26,540 state labels, 44,834 transitions) made a 1.15 MB
    # answer, computed, then failed RESOURCE_EXHAUSTED "SERVER: Sent message larger than max
    # (1146302 vs. 1048576)" under a 1 MiB limit, naming no field
    import random

    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", grpc_max_message_bytes=1 << 20)
    draw = random.Random(1)
    paths = [([f"c{draw.randrange(30)}" for _ in range(6)], 1.0, 0.0, 1.0) for _ in range(9000)]
    async with serving(settings) as (_, ch):
        small = pb_grpc.AttributionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            await small.Attribute(request(pb.MARKOV, paths, order=4, transition_matrix=True),
                                  timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("spec.transition_matrix: the transition matrix's "
                                              "26540 states and 44834 transitions take at "
                                              "least 1.1 MiB"), err.value.details()
        fewer = await small.Attribute(request(pb.MARKOV, paths[:4000], order=4,
                                              transition_matrix=True), timeout=60)
        assert len(fewer.transition_matrix.probability) > 10_000
        whole = await small.Attribute(request(pb.MARKOV, paths, order=4), timeout=60)
        assert sum(c.conversions for c in whole.credits) == pytest.approx(9000)


async def test_ordered_credits_by_rank_that_cannot_fit_one_message_are_refused(tmp_path):
    # SHAPLEY ORDERED over one path of 300 distinct channels: a 1.7 KB request whose credits
    # by rank (300 x 300 cells, two doubles each) made a 1.45 MB answer under a 1 MiB limit,
    # computed, then failed RESOURCE_EXHAUSTED "SERVER: Sent message larger than max (1454621
    # vs. 1048576)", naming no field
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", grpc_max_message_bytes=1 << 20)
    wide = [([f"c{i}" for i in range(300)], 1.0, 2.0, 0.0)]
    async with serving(settings) as (_, ch):
        small = pb_grpc.AttributionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            await small.Attribute(request(pb.SHAPLEY, wide, shapley_form=pb.ORDERED), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("spec.shapley_form: the ORDERED credits by rank "
                                              "(300 channels x 300 ranks) take at least 1.4 "
                                              "MiB"), err.value.details()
        narrower = [([f"c{i}" for i in range(200)], 1.0, 2.0, 0.0)]  # 0.64 MB: answered
        resp = await small.Attribute(request(pb.SHAPLEY, narrower, shapley_form=pb.ORDERED))
        assert len(resp.credits) == 200 and len(resp.credits[0].rank_conversions) == 200


# -- bad input -----------------------------------------------------------------------------


def bad(model=pb.LINEAR, paths=PATHS, **spec):
    return request(model, paths, **spec)


BAD = [
    ("no paths", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR)), "paths"),
    ("empty path", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                       paths=[pb.Path(path="a"), pb.Path()]), "paths[1]"),
    ("empty channel", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                          paths=[pb.Path(path="a >  > b")]), "paths[0]"),
    ("both forms", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                       paths=[pb.Path(path="a", channels=["a"])]), "paths[0]"),
    ("unspecified model", bad(pb.ATTRIBUTION_MODEL_UNSPECIFIED), "spec.model"),
    ("unknown model", bad(99), "spec.model"),
    ("order too high", bad(pb.MARKOV, order=5), "spec.order"),
    ("negative order", bad(pb.MARKOV, order=-1), "spec.order"),
    ("negative conversions", bad(paths=[(["a"], -1.0, 0.0, 0.0)]), "paths[0].conversions"),
    ("negative nulls", bad(pb.MARKOV, paths=[(["a"], 1.0, 0.0, -2.0)]), "paths[0].nulls"),
    ("negative value", bad(paths=[(["a"], 1.0, -5.0, 0.0)]), "paths[0].value"),
    ("NaN conversions", bad(paths=[(["a"], 1.0, 0.0, 0.0), (["b"], float("nan"), 0.0, 0.0)]),
     "paths[1].conversions"),
    ("infinite value", bad(paths=[(["a"], 1.0, float("inf"), 0.0)]), "paths[0].value"),
    ("NaN timestamp", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.TIME_DECAY), paths=[
        pb.Path(path="a > b", timestamps=[1.0, float("nan")])]), "paths[0].timestamps"),
    ("shares over 1", bad(pb.POSITION_BASED, position_first=0.7, position_last=0.6),
     "spec.position_first/position_last"),
    ("NaN share", bad(pb.POSITION_BASED, position_first=float("nan"), position_last=0.4),
     "spec.position_first/position_last"),  # answered NaN credits
    ("negative half-life", pb.AttributeRequest(
        spec=pb.ModelSpec(model=pb.TIME_DECAY, half_life_seconds=-1),
        paths=[pb.Path(path="a", timestamps=[1.0])]), "spec.half_life_seconds"),
    ("time decay without timestamps", bad(pb.TIME_DECAY), "paths[0].timestamps"),
    ("timestamps misaligned", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.TIME_DECAY), paths=[
        pb.Path(path="a > b", timestamps=[1.0])]), "paths[0].timestamps"),
    ("too many channels for exact Shapley",
     bad(pb.SHAPLEY, [([f"c{i}"], 1.0, 0.0, 1.0) for i in range(21)], shapley_form=pb.RATE),
     "spec.shapley_samples"),
    ("unknown Shapley form", bad(pb.SHAPLEY, shapley_form=7), "spec.shapley_form"),
    # 60,000 channels overflow the int64 state codes at order 4: the call hung a worker thread
    # for good (past the deadline and Limits.attribution_seconds), burning a core
    ("more channels than order-4 states hold",
     bad(pb.MARKOV, [([f"c{j}" for j in range(i, i + 4)], 1.0, 0.0, 1.0)
                     for i in range(0, 60_000, 4)], order=4), "spec.order"),
    ("transition matrix of a heuristic", bad(transition_matrix=True), "spec.transition_matrix"),
    ("bad row", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                    channelattribution_rows=["a;1", "b;x"]),
     "channelattribution_rows[1]"),
    ("NaN first share", bad(pb.POSITION_BASED, position_first=float("nan"), position_last=0.4),
     "spec.position_first/position_last"),
    ("NaN last share", bad(pb.POSITION_BASED, position_first=0.0, position_last=float("nan")),
     "spec.position_first/position_last"),
    # Finite but past Limits.attribution_count_max: their sums overflow to inf and NaN credits.
    ("huge conversions", bad(paths=[(["a"], 1e308, 0.0, 0.0), (["a"], 1e308, 0.0, 0.0)]),
     "paths[0].conversions"),
    ("huge value", bad(paths=[(["a"], 1.0, 2.0, 0.0), (["b"], 1.0, 1e300, 0.0)]),
     "paths[1].value"),
    ("huge nulls", bad(pb.MARKOV, paths=[(["a", "b"], 1.0, 0.0, 1e308)]), "paths[0].nulls"),
    ("huge row count", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.MARKOV),
                                           channelattribution_rows=["a;1;0;0", "a > b;1e308;0;0"]),
     "channelattribution_rows[1].conversions"),
    # A first row whose count is not a number is not a header to skip silently.
    ("bad first row", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                          channelattribution_rows=["a;1O;0;0", "b;1;0;0"]),
     "channelattribution_rows[0]"),
    ("NaN first row", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                          channelattribution_rows=["a > b;nan;0;0"]),
     "channelattribution_rows[0].conversions"),
    ("first row without counts", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                                     channelattribution_rows=["a > b"]),
     "channelattribution_rows[0]"),
    # a fifth column was ignored, whatever it held
    ("fifth column", pb.AttributeRequest(spec=pb.ModelSpec(model=pb.LINEAR),
                                         channelattribution_rows=["a;1;0;0", "b;1;0;0;5"]),
     "channelattribution_rows[1]"),
]


@pytest.mark.parametrize("case,req,field", BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_invalid_argument_naming_the_field(stub, case, req, field):
    with pytest.raises(grpc.RpcError) as err:
        await stub.Attribute(req, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: "), err.value.details()


async def test_stream_bad_input_is_invalid_argument(stub):
    async def messages():
        yield request(pb.MARKOV, PATHS[:1])
        yield pb.AttributeRequest(paths=[pb.Path(path="a", conversions=-1)])
    with pytest.raises(grpc.RpcError) as err:
        await stub.AttributeStream(messages())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("paths[1].conversions: ")

    async def empty():
        return
        yield
    with pytest.raises(grpc.RpcError) as err:
        await stub.AttributeStream(empty())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- stored journeys -----------------------------------------------------------------------

BASE = float(int(time.time() // DAY - 60) * DAY)
START, END = BASE, BASE + 10 * DAY
# (user, type, channel, campaign, value, day offset from BASE)
EVENTS = [
    ("u1", "email_sent", "email", "c1", 0, 0), ("u1", "email_click", "email", "c1", 0, 1),
    ("u1", "view", "web", "", 0, 2), ("u1", "purchase", "web", "", 50, 3),
    ("u1", "push_sent", "push", "c2", 0, 5), ("u1", "purchase", "app", "", 20, 6),
    ("u2", "sms_sent", "sms", "c3", 0, 1),                        # no purchase: null journey
    ("u3", "email_open", "email", "c1", 0, -40),                  # past the lookback
    ("u3", "push_click", "push", "c2", 0, 1), ("u3", "purchase", "web", "", 30, 2),
    ("u4", "purchase", "web", "", 10, 4),                         # no touch: unattributed
    ("u5", "email_sent", "email", "c1", 0, -5),                   # claimed before START
    ("u5", "purchase", "web", "", 15, -1),
    ("u5", "sms_sent", "sms", "c4", 0, 1), ("u5", "purchase", "web", "", 25, 2),
    ("u6", "view", "web", "", 0, 8), ("u6", "purchase", "web", "", 99, 12),  # after END: null
    ("u7", "add_to_cart", "web", "", 0, 1), ("u7", "view", "web", "", 0, 1.5),
    ("u7", "purchase", "web", "", 40, 2),
]


@pytest_asyncio.fixture(scope="module")
async def tracked(server_channel):
    profiles = ppb_grpc.ProfileServiceStub(server_channel)
    events = [ppb.Event(event_id=f"attr-{i}", user_id=f"attr-{u}", type=t, channel=ch,
                        campaign_id=camp, value=v, timestamp=BASE + d * DAY)
              for i, (u, t, ch, camp, v, d) in enumerate(EVENTS)]
    reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=events))
    assert reply.accepted == len(EVENTS), reply.rejected
    return reply


def stored(model, by=pb.CHANNEL, **kw):
    spec = {k: kw.pop(k) for k in list(kw) if k in pb.ModelSpec.DESCRIPTOR.fields_by_name}
    return pb.AttributeStoredRequest(spec=pb.ModelSpec(model=model, **spec), start_time=int(START),
                                     end_time=int(END), lookback_seconds=int(30 * DAY),
                                     group_by=by, **kw)


async def test_stored_last_touch_by_channel(stub, tracked):
    resp = await stub.AttributeStored(stored(pb.LAST_TOUCH))
    assert credits(resp) == {"email": (0, 0), "web": (2, 90), "push": (2, 50), "sms": (1, 25)}
    assert (resp.total_conversions, resp.total_value) == (5, 165)
    assert (resp.unattributed_conversions, resp.unattributed_value) == (1, 10)
    assert resp.paths == 4  # email>email>web, push, sms (+ u2's null), web (+ u6's null)


async def test_stored_linear_by_channel(stub, tracked):
    resp = await stub.AttributeStored(stored(pb.LINEAR))
    assert credits(resp) == approx({"email": (2 / 3, 100 / 3), "web": (4 / 3, 50 / 3 + 40),
                                    "push": (2, 50), "sms": (1, 25)})


async def test_stored_by_campaign(stub, tracked):
    last = await stub.AttributeStored(stored(pb.LAST_TOUCH, pb.CAMPAIGN))
    assert credits(last) == {"c1": (0, 0), "(web)": (2, 90), "c2": (2, 50), "c4": (1, 25),
                             "c3": (0, 0)}
    first = await stub.AttributeStored(stored(pb.FIRST_TOUCH, pb.CAMPAIGN))
    assert credits(first) == {"c1": (1, 50), "(web)": (1, 40), "c2": (2, 50), "c4": (1, 25),
                              "c3": (0, 0)}


async def test_stored_paths_with_nulls_and_markov_sums(stub, tracked):
    resp = await stub.AttributeStored(stored(pb.MARKOV, path_credits=True))
    journeys = {tuple(p.channels): (p.conversions, p.value, p.nulls) for p in resp.stored_paths}
    assert journeys == {("email", "email", "web"): (1, 50, 0), ("push",): (2, 50, 0),
                        ("sms",): (1, 25, 1), ("web",): (1, 40, 1)}
    assert sum(c.conversions for c in resp.credits) == pytest.approx(5)
    assert sum(c.value for c in resp.credits) == pytest.approx(165)
    assert resp.conversion_probability == pytest.approx(5 / 7)
    enc = Paths.from_sequences([list(p.channels) for p in resp.stored_paths],
                               *zip(*journeys.values()))
    assert_matches_kernel(resp, attribute(enc, "markov"))
    no_nulls = await stub.AttributeStored(stored(pb.MARKOV, path_credits=True, exclude_nulls=True))
    assert sum(p.nulls for p in no_nulls.stored_paths) == 0
    assert no_nulls.conversion_probability == pytest.approx(1.0)


async def test_stored_touch_types_and_time_decay(stub, tracked):
    visits = await stub.AttributeStored(stored(pb.LAST_TOUCH, touch_types=["view", "click"]))
    assert credits(visits) == {"web": (2, 90)}
    assert (visits.unattributed_conversions, visits.unattributed_value) == (4, 85)
    decay = await stub.AttributeStored(stored(pb.TIME_DECAY, half_life_seconds=DAY,
                                              path_credits=True))
    assert decay.paths == 7  # every journey on its own, with its timestamps
    w = np.array([0.25, 0.5, 1.0]) / 1.75  # u1: email -2d, email -1d, web at 0 before purchase
    assert credits(decay)["email"] == pytest.approx((w[:2].sum(), 50 * w[:2].sum()))
    assert sum(c.conversions for c in decay.credits) == pytest.approx(5)


async def test_stored_nothing_in_range_is_empty(stub, tracked):
    req = stored(pb.MARKOV)
    req.start_time, req.end_time = int(BASE - 300 * DAY), int(BASE - 200 * DAY)
    resp = await stub.AttributeStored(req)
    assert (resp.paths, len(resp.credits), resp.total_conversions) == (0, 0, 0)


async def test_stored_events_at_the_same_time_are_taken_in_event_id_order(stub, server_channel):
    """Ties followed the stored keys' order, keyed hashes of the ids under the server's secret:
    the same events gave email or web the last touch, and one purchase's value or the other's,
    from one server to the next. Eight users with two touches and two purchases tied each."""
    at = BASE - 120 * DAY  # outside every other test's range and lookback
    events = [ppb.Event(event_id=f"tie{u}-{x}", user_id=f"tie{u}", type=t, value=v, timestamp=ts)
              for u in range(8) for x, t, v, ts in [("b", "email_click", 0, at), ("a", "view", 0, at),
                                                   ("d", "purchase", 2, at + 60),
                                                   ("c", "purchase", 1, at + 60)]]
    reply = await ppb_grpc.ProfileServiceStub(server_channel).TrackEvents(
        ppb.TrackEventsRequest(events=events))
    assert reply.accepted == 32
    req = pb.AttributeStoredRequest(spec=pb.ModelSpec(model=pb.LAST_TOUCH, path_credits=True),
                                    start_time=int(at - 1), end_time=int(at + DAY))
    resp = await stub.AttributeStored(req)
    assert [(list(p.channels), p.conversions, p.value, p.nulls) for p in resp.stored_paths] == [
        (["web", "email"], 8, 8, 0)]  # view tie-a before email_click tie-b, purchase -c first
    assert credits(resp) == {"web": (0, 0), "email": (8, 8)}
    assert (resp.unattributed_conversions, resp.unattributed_value) == (8, 16)


async def test_stored_journeys_answer_the_same_on_every_server(tmp_path):
    """Journeys came in the store's order, keyed hashes of the user ids under each server's
    secret, and a seeded sampled RATE Shapley draws its permutations over that order: two
    servers holding the same events gave a campaign -0.48 and 0.74 conversions."""
    import random

    from server.config import Settings
    from tests.conftest import serving
    at, pick = BASE - 140 * DAY, random.Random(11)
    events = []
    for u in range(30):
        for k, camp in enumerate(pick.sample(range(22), 3)):
            events.append(ppb.Event(event_id=f"same{u}-{k}", user_id=f"same{u}", type="email_click",
                                    campaign_id=f"camp{camp:02d}", timestamp=at + 60 * k))
        if u % 3:
            events.append(ppb.Event(event_id=f"same{u}-p", user_id=f"same{u}", type="purchase",
                                    value=float(u), timestamp=at + 600))
    req = pb.AttributeStoredRequest(
        spec=pb.ModelSpec(model=pb.SHAPLEY, shapley_form=pb.RATE, shapley_samples=300, seed=5),
        start_time=int(at - 1), end_time=int(at + DAY), group_by=pb.CAMPAIGN)
    answers = []
    for name in ("one", "two"):  # each with secrets of its own
        settings = Settings(port=0, data_dir=tmp_path / name / "data", grace_seconds=1.0,
                            lmdb_sync=False, secrets_dir=tmp_path / name / "secrets")
        async with serving(settings) as (_, ch):
            reply = await ppb_grpc.ProfileServiceStub(ch).TrackEvents(
                ppb.TrackEventsRequest(events=events))
            assert reply.accepted == len(events)
            resp = await pb_grpc.AttributionServiceStub(ch).AttributeStored(req)
            answers.append([(c.channel, c.conversions, c.value) for c in resp.credits])
    assert len(answers[0]) > 20 and answers[0] == answers[1]  # past the exact limit: sampled


STORED_BAD = [
    ("end before start", {"end_time": int(START - 1)}, "end_time"),
    ("negative lookback", {"lookback_seconds": -5}, "lookback_seconds"),
    ("purchase as touch", {"touch_types": ["purchase"]}, "touch_types"),
    ("unknown touch", {"touch_types": ["teleport"]}, "touch_types"),
    ("unknown grouping", {"group_by": 9}, "group_by"),
    ("start past 2100", {"start_time": 2 ** 62, "end_time": 0}, "start_time"),
    ("end past 2100", {"end_time": 2 ** 62}, "end_time"),
]


@pytest.mark.parametrize("case,change,field", STORED_BAD, ids=[b[0] for b in STORED_BAD])
async def test_stored_bad_input_is_invalid_argument(stub, case, change, field):
    req = stored(pb.LINEAR)
    for key, value in change.items():
        if isinstance(value, list):
            getattr(req, key).extend(value)
        else:
            setattr(req, key, value)
    with pytest.raises(grpc.RpcError) as err:
        await stub.AttributeStored(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: "), err.value.details()


async def test_bad_touch_types_are_named_escaped_and_not_logged(stub, caplog):
    """A touch type holding NUL, a newline or a bidirectional control was echoed raw: into the
    status, and into the server log, where its newline began a line of the caller's own."""
    bad = ["a\x00b", "x\n2026-12-07 INFO forged line", "e\u202e"]
    req = stored(pb.LINEAR)
    req.touch_types.extend(["click", *bad])
    with caplog.at_level("INFO", logger="tailor.errors"), pytest.raises(grpc.RpcError) as err:
        await stub.AttributeStored(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("touch_types: unknown or not a touchpoint: 'a\\x00b', "), details
    assert not any(c in details for c in "\x00\n\u202e"), details
    logged = [r.getMessage() for r in caplog.records if "AttributeStored" in r.getMessage()]
    assert logged and logged[-1].startswith("AttributionServicer.AttributeStored -> INVALID_ARGUMENT: "
                                            "touch_types: 3 unknown or not a touchpoint (allowed: ")
    assert not any(t in line for t in ("forged", "a\x00b", "\u202e") for line in logged)


# -- client and CLI ------------------------------------------------------------------------


async def test_client_and_cli_attribute(attribution_server, tracked, tmp_path):
    import asyncio
    import json

    from clients.client import TailorClient
    target = f"127.0.0.1:{attribution_server.port}"
    rows = ["a > b > c;2;20;0", "direct > a > direct;1;6;0"]
    with TailorClient(target) as client:
        got = await asyncio.to_thread(client.attribute, [*rows, {"path": ["b"], "value": 4,
                                                                 "nulls": 3}], "linear", chunk=2)
        stored_last = await asyncio.to_thread(client.attribute_stored, "last", by="campaign",
                                              start=START, end=END, lookback_days=30)
    assert {c.channel: c.conversions for c in got.credits} == approx(
        {k: v[0] for k, v in HAND[pb.LINEAR].items()})
    assert {c.channel: c.value for c in stored_last.credits}["(web)"] == 90
    path_file = tmp_path / "paths.txt"
    path_file.write_text("\n".join(rows) + "\n")
    code, out, _ = await _cli_attribute(target, path_file, "--model", "markov", "--order", "2")
    assert code == 0
    _, res = kernel("markov", [(["a", "b", "c"], 2, 20, 0), (["direct", "a", "direct"], 1, 6, 0)],
                    order=2)
    assert {c["channel"]: c["conversions"] for c in json.loads(out)["credits"]} == approx(
        dict(zip(res.channels, res.conversions.tolist())))


async def _cli_attribute(target: str, path_file, *args: str) -> tuple[int, bytes, bytes]:
    """`python -m clients attribute --server target *args path_file`: (exit code, stdout,
    stderr)."""
    import asyncio
    import sys

    from tests.conftest import ROOT
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients", "attribute", "--server", target, *args, str(path_file),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out, err


async def test_the_cli_prints_attribution_sums_without_float_noise(attribution_server, tmp_path):
    """Credits and totals are float sums: the CLI printed 0.1 + 0.2 as 0.30000000000000004 (an
    integrator's stored attribution, 59.89999999999999). It prints a double's 15 significant
    digits now, still JSON numbers."""
    import json

    path_file = tmp_path / "sums.txt"
    path_file.write_text("a;1;0.1;0\nb;1;0.2;0\n")
    code, out, _ = await _cli_attribute(f"127.0.0.1:{attribution_server.port}", path_file,
                                        "--model", "linear")
    assert code == 0
    printed = json.loads(out)
    assert (printed["total_value"], printed["total_conversions"]) == (0.3, 2.0), out.decode()
    assert {c["channel"]: c["value"] for c in printed["credits"]} == {"a": 0.1, "b": 0.2}


async def test_the_cli_reads_a_path_file_with_a_byte_order_mark(attribution_server, tmp_path):
    """A spreadsheet's UTF-8 export starts with U+FEFF: the CLI sent it as part of the first
    row, and the server credited a channel '\\ufeffa' apart from the 'a' of the other rows."""
    import json

    path_file = tmp_path / "bom.csv"
    path_file.write_bytes(b"\xef\xbb\xbfa;1;1;0\r\na > b;1;1;0\r\n")
    code, out, _ = await _cli_attribute(f"127.0.0.1:{attribution_server.port}", path_file,
                                        "--model", "first")
    assert code == 0
    assert {c["channel"]: c["conversions"] for c in json.loads(out)["credits"]} == {"a": 2.0, "b": 0.0}


async def test_bad_path_records_are_named_before_the_upload(attribution_server, tmp_path):
    import asyncio
    import json

    from clients.client import TailorClient
    target = f"127.0.0.1:{attribution_server.port}"
    good = {"path": ["a", "b"], "conversions": 1}
    with TailorClient(target) as client:
        for record, key in [({"channels": ["a", "b"], "conversions": 1}, "'channels'"),
                            ({"path": ["a"], "conversions": "two"}, "'conversions'"),
                            ({"path": ["a"], "nulls": float("nan")}, "'nulls'"),
                            ({"conversions": 1}, "'path'")]:
            with pytest.raises(ValueError) as err:
                await asyncio.to_thread(client.attribute, [good, record], "linear")
            assert str(err.value).startswith("paths[1]: ") and key in str(err.value)
    path_file = tmp_path / "paths.jsonl"
    path_file.write_text(json.dumps(good) + "\n\n" + json.dumps({"channels": ["a"]}) + "\n")
    code, out, err = await _cli_attribute(target, path_file, "--model", "linear")
    assert code != 0 and not out
    message = err.decode()
    assert "line 3: unknown key 'channels'" in message and "UNKNOWN" not in message, message


def test_journeys_from_stored_events_stop_at_the_deadline():
    # AttributeStored read every stored event of the range into journeys before looking at
    # the deadline (Limits.attribution_seconds or the caller's): a large store kept the thread
    # reading long after the caller had gone. An endless store shows it.
    import itertools
    import threading

    from kernels.attribution import BudgetExceeded
    from server.attribution import JourneyQuery, build_journeys

    def endless():
        for i in itertools.count():
            yield ppb.Event(user_id=f"u{i // 3}", type="view", channel="web",
                            timestamp=1_700_000_000.0 + i)

    raised = []

    def run():
        try:
            build_journeys(endless(), JourneyQuery(), deadline=time.monotonic() + 0.2)
        except BudgetExceeded:
            raised.append(True)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive() and raised


async def test_reading_stored_events_outside_the_range_stops_at_the_deadline(attribution_server,
                                                                             tracked):
    # AttributeStored scans every stored event for those in its range (the keys are by user,
    # then time) and looked at the deadline only per event in range: a narrow range over a
    # large store scanned on past the budget and the caller's deadline (300,000 events out of
    # range: 0.28 s against a 0.2 s budget, answered OK; 30 million would be half a minute),
    # holding one of the two computation slots and a read transaction
    import asyncio

    from kernels.attribution import BudgetExceeded
    from server.attribution import JourneyQuery
    from server.attribution.journeys import journeys_from_store

    export = attribution_server.profiles.export
    future = JourneyQuery(start=START + 400 * DAY, end=START + 401 * DAY, lookback=DAY)
    assert any(export(0.0, 0.0))  # a non-empty list: the tracked events are there, out of range
    with pytest.raises(BudgetExceeded):
        await asyncio.to_thread(journeys_from_store, export, future, time.monotonic() - 1.0)
    found = await asyncio.to_thread(journeys_from_store, export, future, time.monotonic() + 60)
    assert found.paths is None  # in time: nothing in range, as before


async def test_path_credits_of_many_short_paths_past_the_limit_are_refused_naming_the_field(
        tmp_path):
    # 48,000 one-touch paths (a 0.67 MB request): their per-touch credits took 1,231,781 bytes,
    # 25.7 a path where the check counted 20 (two doubles and 4 bytes a path, not the packed
    # fields' tags and lengths nor each PathCredit's framing), so they passed it, were computed,
    # then failed RESOURCE_EXHAUSTED "SERVER: Sent message larger than max", naming no field
    from server.app import TailorServer
    from server.config import Settings
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0,
                                   lmdb_sync=False, secrets_dir=tmp_path / "secrets",
                                   grpc_max_message_bytes=1 << 20))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            small = pb_grpc.AttributionServiceStub(ch)
            paths = [([chr(97 + i % 20)], 1.0, 0.0, 0.0) for i in range(48_000)]
            with pytest.raises(grpc.RpcError) as err:
                await small.Attribute(request(pb.LINEAR, paths, path_credits=True), timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert err.value.details().startswith("spec.path_credits: per-touch credits of "
                                                  "48000 touches"), err.value.details()
            resp = await small.Attribute(request(pb.LINEAR, paths[:40_000], path_credits=True),
                                         timeout=60)  # 1,023,781 bytes: fits
            assert len(resp.path_credits) == 40_000
    finally:
        await server.stop(grace=0.5)


async def test_ordered_credits_by_rank_just_past_the_limit_are_refused_naming_the_field(tmp_path):
    # 255 distinct channels: 255 x 255 cells of two doubles, 1,040,400 bytes, passed the check
    # (which counted only the cells) under a 1 MiB limit; with each channel's name, credits
    # and the packed fields' framing the credits took 1,048,705 bytes (the answer 1,052,816):
    # computed, then failed RESOURCE_EXHAUSTED "SERVER: Sent message larger than max", naming
    # no field
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", grpc_max_message_bytes=1 << 20)
    async with serving(settings) as (_, ch):
        small = pb_grpc.AttributionServiceStub(ch)
        wide = [([f"c{i}" for i in range(255)], 1.0, 1.0, 0.0)]
        with pytest.raises(grpc.RpcError) as err:
            await small.Attribute(request(pb.SHAPLEY, wide, shapley_form=pb.ORDERED), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert err.value.details().startswith("spec.shapley_form: the ORDERED credits by rank "
                                              "(255 channels x 255 ranks) take at least 1.0 MiB "
                                              "(1,048,705 bytes)"), err.value.details()
        narrower = [([f"c{i}" for i in range(254)], 1.0, 1.0, 0.0)]  # 1,040,500 bytes
        resp = await small.Attribute(request(pb.SHAPLEY, narrower, shapley_form=pb.ORDERED))
        assert len(resp.credits) == 254 and resp.ByteSize() <= 1 << 20


@pytest.mark.parametrize("model, spec", [(pb.SHAPLEY, {}), (pb.SHAPLEY, {"shapley_form": pb.ORDERED}),
                                         (pb.MARKOV, {}), (pb.LINEAR, {})])
async def test_per_touch_credits_are_answered_only_when_asked(stub, model, spec):
    # SHAPLEY COUNTS and ORDERED answered path_credits without path_credits (the kernel kept
    # its own per-touch share): 1,000 one-touch paths took 25,164 bytes where the channels'
    # credits take a few hundred, and 48,000 failed RESOURCE_EXHAUSTED "SERVER: Sent message
    # larger than max (1231781 vs. 1048576)" under a 1 MiB limit, the size check counting none
    resp = await stub.Attribute(request(model, **spec))
    assert resp.credits and not resp.path_credits
    asked = await stub.Attribute(request(model, path_credits=True, **spec))
    assert len(asked.path_credits) == len(PATHS)
