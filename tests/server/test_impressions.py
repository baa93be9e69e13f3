"""The impression log against a real server: Recommend answers recorded under their request id,
clicks and purchases joined with and without it, GetModelStats per version and channel, erasure
with DeleteProfile, retention, and the switch that turns it off."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import model_admin_pb2 as apb
from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.impressions import wilson
from tests.conftest import store_mentions

DAY = 86400.0


@pytest.fixture
def stubs(channel):
    return (rpb_grpc.RecommendationServiceStub(channel), pb_grpc.ProfileServiceStub(channel),
            apb_grpc.ModelAdminServiceStub(channel))


async def recommend(rec, user, channel="web", k=10, **kw):
    call = rec.Recommend(rpb.RecommendRequest(user_id=user, k=k, channel=channel, **kw))
    reply = await call
    trailing = dict(await call.trailing_metadata())
    assert reply.request_id and reply.request_id == trailing["x-request-id"]
    return reply


def event(eid, user, type, item, request_id="", position=0, value=0.0, ts=None):
    return pb.Event(event_id=eid, user_id=user, type=type, item_id=item, request_id=request_id,
                    position=position, value=value, timestamp=ts or time.time())


async def stats(admin, **kw):
    reply = await admin.GetModelStats(apb.GetModelStatsRequest(**kw))
    return {(r.model_version, r.channel): r for r in reply.rows}


async def impressions_of(server, user):
    """The user's stored impressions (request id -> record), read by their keyed-hash prefix
    once the writer process has committed what the log buffered."""
    log = server.impressions.log
    await log.flushed()
    with log.store.read() as txn:
        found = log.store.table("impressions").scan_prefix(txn, log.user_prefix(user))
    from server.impressions.records import decode
    return {k.rsplit(b"\x1f", 1)[1].decode(): decode(v) for k, v in found}


async def test_answers_are_logged_under_their_request_id(tailor_server, stubs):
    rec, _, _ = stubs
    reply = await recommend(rec, "u1", context={"page": "home"})
    logged = await impressions_of(tailor_server, "u1")
    imp = logged[reply.request_id]
    assert imp.model_version == reply.model_version and imp.channel == "web"
    assert imp.context == {"page": "home"} and imp.cold_start == reply.cold_start
    assert imp.scores.tolist() == pytest.approx([i.score for i in reply.items])
    from contract.items import item_code
    assert imp.items.tolist() == [item_code(i.item_id) for i in reply.items]
    batch = await rec.RecommendBatch(rpb.RecommendBatchRequest(requests=[
        rpb.RecommendRequest(user_id="u2", k=3), rpb.RecommendRequest(user_id="u3", k=3)]))
    ids = [r.request_id for r in batch.responses]
    call_id = ids[0][:-2]
    assert ids == [f"{call_id}.0", f"{call_id}.1"]
    assert list(await impressions_of(tailor_server, "u3")) == [ids[1]]
    assert store_mentions(tailor_server.store, b"u1") == []  # keyed hashes only, never the id


async def test_click_with_request_id_joins_its_impression_at_its_position(tailor_server, stubs):
    rec, profiles, admin = stubs
    first = await recommend(rec, "ann")
    await asyncio.sleep(0.01)
    second = await recommend(rec, "ann")
    item = first.items[3].item_id
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("c1", "ann", "click", item, request_id=first.request_id)]))
    assert reply.accepted == 1
    logged = await impressions_of(tailor_server, "ann")
    assert (logged[first.request_id].first_click, logged[first.request_id].clicks) == (3, 1)
    assert logged[second.request_id].clicks == 0  # the older answer, named by its id, got it
    # an explicit position wins over the item's; a later click further down keeps the first
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("c2", "ann", "click", item, request_id=second.request_id, position=1),
        event("c3", "ann", "click", second.items[5].item_id, request_id=second.request_id)]))
    got = (await impressions_of(tailor_server, "ann"))[second.request_id]
    assert (got.first_click, got.clicks) == (0, 2)
    row = (await stats(admin, channel="web"))[(first.model_version, "web")]
    assert (row.impressions, row.clicked, row.clicks) == (2, 2, 3)
    ctr = {r.k: r.value for r in row.ctr}
    assert ctr == {1: 0.5, 5: 1.0, 10: 1.0}  # first clicks at positions 3 and 0 (0-based)


async def test_a_batch_answer_of_a_64_character_request_id_joins_its_click(tailor_server, stubs):
    # A caller's x-request-id may be 64 characters; a RecommendBatch answer's id is that plus
    # ".<i>", and the click that sends it back must be accepted and join that answer.
    rec, profiles, _ = stubs
    call_id = "r" * 64
    batch = await rec.RecommendBatch(rpb.RecommendBatchRequest(requests=[
        rpb.RecommendRequest(user_id="cy", k=5) for _ in range(12)]),
        metadata=(("x-request-id", call_id),))
    answer = batch.responses[11]
    assert answer.request_id == call_id + ".11"
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("cy1", "cy", "click", answer.items[2].item_id, request_id=answer.request_id)]))
    assert (reply.accepted, list(reply.rejected)) == (1, [])
    logged = await impressions_of(tailor_server, "cy")
    assert (logged[answer.request_id].first_click, logged[answer.request_id].clicks) == (2, 1)
    assert sum(imp.clicks for imp in logged.values()) == 1
    # a request id no answer can have is still refused
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("cy2", "cy", "click", answer.items[2].item_id, request_id="r" * 65)]))
    assert reply.accepted == 0 and "request_id" in reply.rejected[0].reason


async def test_a_request_id_shared_by_two_answers_joins_the_one_that_showed_the_item(
        tailor_server, stubs):
    # A gateway passes one x-request-id to every call of a page: two widgets, two answers.
    rec, profiles, _ = stubs
    meta = (("x-request-id", "page-1"),)
    books = await rec.Recommend(rpb.RecommendRequest(user_id="di", k=5, categories=["books"]),
                                metadata=meta)
    await asyncio.sleep(0.01)
    office = await rec.Recommend(rpb.RecommendRequest(user_id="di", k=5, categories=["office"]),
                                 metadata=meta)
    await asyncio.sleep(0.01)  # keys order by time: the same millisecond left their order open
    later = await rec.Recommend(rpb.RecommendRequest(user_id="di", k=5, categories=["books"]))
    assert books.request_id == office.request_id == "page-1"
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("d1", "di", "click", office.items[3].item_id, request_id="page-1"),
        event("d2", "di", "click", books.items[1].item_id, request_id="page-1")]))
    log = tailor_server.impressions.log
    await log.flushed()
    with log.store.read() as txn:
        found = log.store.table("impressions").scan_prefix(txn, log.user_prefix("di"))
    from server.impressions.records import decode
    got = [decode(v) for _, v in found]  # oldest first
    assert [(i.first_click, i.clicks) for i in got] == [(1, 1), (3, 1), (-1, 0)]
    assert later.items[1].item_id == books.items[1].item_id  # named by id, not the latest


async def test_without_request_id_the_latest_impression_holding_the_item_joins(
        tailor_server, stubs):
    rec, profiles, _ = stubs
    older = await recommend(rec, "bo")
    await asyncio.sleep(0.01)
    newer = await recommend(rec, "bo", channel="app")
    item = newer.items[2].item_id
    assert item in [i.item_id for i in older.items]  # same user, same answer
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[event("b1", "bo", "click", item)]))
    logged = await impressions_of(tailor_server, "bo")
    assert logged[newer.request_id].first_click == 2 and logged[older.request_id].clicks == 0
    # outside the attribution window (a day by default), or an item never shown: no join
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("b2", "bo", "click", item, ts=time.time() - 2 * DAY + 60),
        event("b3", "bo", "click", "not-shown-item")]))
    logged = await impressions_of(tailor_server, "bo")
    assert logged[newer.request_id].clicks == 1 and logged[older.request_id].clicks == 0


async def test_a_click_stamped_in_whole_seconds_joins_the_answer_of_its_second(
        tailor_server, stubs):
    """A clock to the second (epoch seconds, RFC 3339 without a fraction) stamps a click on an
    answer shown 0.05 s into a second with that second's start: it joins that answer, not the
    older one of another channel that showed the item too; a timestamp with a fraction still
    joins nothing shown after it."""
    rec, profiles, _ = stubs
    older = await recommend(rec, "cy", channel="email")
    await asyncio.sleep(1.05 - time.time() % 1.0)  # into the next second
    newer = await recommend(rec, "cy")
    item = newer.items[0].item_id
    assert item in [i.item_id for i in older.items]  # same user, same answer
    shown = (await impressions_of(tailor_server, "cy"))[newer.request_id].timestamp
    assert int(shown) < shown
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("cy1", "cy", "click", item, ts=shown - 0.01),
        event("cy2", "cy", "click", item, ts=float(int(shown)))]))
    logged = await impressions_of(tailor_server, "cy")
    assert (logged[older.request_id].clicks, logged[newer.request_id].clicks) == (1, 1)
    assert logged[newer.request_id].first_click == 0


async def test_purchases_give_conversion_and_revenue_per_mille_with_intervals(tailor_server, stubs):
    rec, profiles, admin = stubs
    replies = [await recommend(rec, f"buyer{i}", channel="email") for i in range(4)]
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("p1", "buyer0", "purchase", replies[0].items[0].item_id,
              request_id=replies[0].request_id, value=10.0),
        event("p2", "buyer0", "purchase", replies[0].items[1].item_id,
              request_id=replies[0].request_id, value=2.0),
        event("a1", "buyer1", "add_to_cart", replies[1].items[0].item_id)]))
    rows = await stats(admin, model_version=replies[0].model_version)
    row = rows[(replies[0].model_version, "email")]
    assert (row.impressions, row.conversions, row.carted, row.revenue) == (4, 1, 1, 12.0)
    assert row.conversion_rate.value == 0.25
    low, high = wilson(1, 4)  # by hand: centre (0.25 + 0.960) / 1.960, half-width 0.4135
    assert (row.conversion_rate.low, row.conversion_rate.high) == pytest.approx((low, high))
    assert (low, high) == pytest.approx((0.0456, 0.6994), abs=1e-4)
    # revenue per impression [12, 0, 0, 0]: mean 3, sample variance (81 + 3 * 9) / 3 = 36,
    # standard error sqrt(36 / 4) = 3, half-width 1.959964 * 3
    rpm = row.revenue_per_mille
    assert rpm.value == pytest.approx(3000.0)
    assert rpm.high == pytest.approx(1000 * (3 + 1.959964 * 3), rel=1e-6)
    assert rpm.low == 0.0
    total = rows[(replies[0].model_version, "all")]
    assert total.impressions >= 4 and total.conversions == 1
    assert tailor_server.impressions.stats.counts(replies[0].model_version) == (
        total.impressions, total.clicked)


async def test_revenue_per_mille_without_a_purchase_has_no_upper_bound(tailor_server, stubs):
    """No purchase yet: revenue per impression is 0 for every impression seen, which says the
    purchase rate is small (Wilson) but nothing about what a purchase is worth, so no finite
    upper bound holds; the interval is [0, inf), not [0, 0] (certainty from no data). The CLI
    prints the missing bound as null (JSON has no Infinity)."""
    import json
    import math

    from tests.conftest import run_module

    rec, _, admin = stubs
    replies = [await recommend(rec, f"window-shopper{i}", channel="sms") for i in range(5)]
    row = (await stats(admin, model_version=replies[0].model_version))[
        (replies[0].model_version, "sms")]
    assert (row.impressions, row.conversions, row.revenue) == (5, 0, 0.0)
    rpm = row.revenue_per_mille
    assert (rpm.value, rpm.low) == (0.0, 0.0) and math.isinf(rpm.high) and rpm.high > 0
    # the purchase rate is bounded all the same: Wilson for 0 of 5, z^2 / (5 + z^2) = 0.4345
    assert row.conversion_rate.high == pytest.approx(1.959964 ** 2 / (5 + 1.959964 ** 2), rel=1e-6)
    out = await asyncio.to_thread(run_module, "clients", "model", "stats", "--server",
                                  f"127.0.0.1:{tailor_server.port}", "--channel", "sms")
    printed = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    sms = [r for r in printed["rows"] if r["channel"] == "sms"]
    assert sms and sms[0]["revenue_per_mille"]["high"] is None


async def test_revenue_per_mille_of_one_impression_has_no_upper_bound(tailor_server, stubs):
    """One impression, bought: a single value has no spread to estimate, [0, inf) too."""
    import math

    rec, profiles, admin = stubs
    reply = await recommend(rec, "lone-buyer", channel="push")
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("lb1", "lone-buyer", "purchase", reply.items[0].item_id,
              request_id=reply.request_id, value=8.0)]))
    row = (await stats(admin, model_version=reply.model_version))[(reply.model_version, "push")]
    assert (row.impressions, row.conversions, row.revenue) == (1, 1, 8.0)
    rpm = row.revenue_per_mille
    assert (rpm.value, rpm.low) == (8000.0, 0.0) and math.isinf(rpm.high)


async def test_stats_are_per_model_version(tailor_server, stubs, second_bundle):
    from clients import TailorClient
    rec, profiles, admin = stubs
    old = await recommend(rec, "vera")
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
        await asyncio.to_thread(client.push_bundle, second_bundle)
    new = await recommend(rec, "vera")
    assert new.model_version != old.model_version
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("v1", "vera", "click", new.items[0].item_id, request_id=new.request_id)]))
    rows = await stats(admin, channel="all")
    assert [v for v, _ in rows] == [new.model_version, old.model_version]  # newest first
    assert (rows[(new.model_version, "all")].impressions, rows[(new.model_version, "all")].clicked) == (1, 1)
    assert (rows[(old.model_version, "all")].impressions, rows[(old.model_version, "all")].clicked) == (1, 0)
    assert tailor_server.impressions.stats.counts(new.model_version) == (1, 1)
    assert tailor_server.impressions.stats.counts("never-served") == (0, 0)
    from prometheus_client import REGISTRY
    tailor_server.impressions.stats.report()
    labels = {"version": new.model_version, "channel": "all"}
    assert REGISTRY.get_sample_value("tailor_model_impressions", labels) == 1
    assert REGISTRY.get_sample_value("tailor_model_ctr", {**labels, "k": "1"}) == 1.0


async def test_delete_profile_erases_the_users_impressions(tailor_server, stubs):
    rec, profiles, admin = stubs
    shown = await recommend(rec, "gone")
    await recommend(rec, "kept")
    assert len(await impressions_of(tailor_server, "gone")) == 1  # written
    buffered = await recommend(rec, "gone")  # still in the buffer when the erasure runs
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="gone"))
    assert await impressions_of(tailor_server, "gone") == {}
    assert len(await impressions_of(tailor_server, "kept")) == 1
    row = (await stats(admin, channel="web"))[(shown.model_version, "web")]
    assert row.impressions == 3  # counters hold no user and stay
    assert buffered.request_id
    back = await recommend(rec, "gone")  # a user who comes back starts a new log
    assert list(await impressions_of(tailor_server, "gone")) == [back.request_id]


async def test_pii_given_as_context_is_never_written_so_no_erasure_leaves_it_on_disk(
        tailor_server, stubs):
    """The impressions table is not sealed: a context value under a PII key (`pii_keys`: an
    email, an IP address) written there stayed readable in data.mdb after DeleteProfile (its
    page freed, not overwritten). Such values are masked before they are buffered; the other
    context entries are kept as given."""
    from pathlib import Path
    rec, profiles, admin = stubs
    email, ip = "ctx-marker-7f3a@example.com", "203.0.113.177"
    reply = await recommend(rec, "ctx", context={"email": email, "client_ip": ip, "page": "home"})
    logged = (await impressions_of(tailor_server, "ctx"))[reply.request_id]
    assert dict(logged.context) == {"email": "c***@example.com", "client_ip": "2***",
                                    "page": "home"}
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="ctx"))
    data = Path(tailor_server.settings.data_dir)
    for needle in (email.encode(), ip.encode()):
        assert not [p for p in data.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_retention_drops_old_impressions_and_keeps_the_counters(tailor_server, stubs):
    rec, _, admin = stubs
    reply = await recommend(rec, "old")
    assert await impressions_of(tailor_server, "old")
    days = tailor_server.settings.impression_retention_days
    now = time.time()
    assert (await tailor_server.sweep_retention(now + (days - 1) * DAY))["impressions"] == 0
    assert (await tailor_server.sweep_retention(now + (days + 1) * DAY))["impressions"] == 1
    assert await impressions_of(tailor_server, "old") == {}
    assert (await stats(admin))[(reply.model_version, "all")].impressions == 1


async def test_bad_inputs_name_their_field(tailor_server, stubs):
    rec, profiles, admin = stubs
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("x1", "u", "click", "i", request_id="bad id!"),
        event("x2", "u", "click", "i", position=100_000)]))
    assert [r.reason.split(" ")[0] for r in reply.rejected] == ["request_id", "position"]
    for req, field in ((apb.GetModelStatsRequest(ks=[0]), "ks"),
                       (apb.GetModelStatsRequest(channel="fax"), "channel"),
                       (apb.GetModelStatsRequest(confidence=1.5), "confidence")):
        with pytest.raises(grpc.RpcError) as err:
            await admin.GetModelStats(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field)
    with pytest.raises(grpc.RpcError) as err:
        await rec.Recommend(rpb.RecommendRequest(user_id="u", k=3, context={"x": "y" * 2000}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("context")


@pytest.fixture
def log_off(settings):
    settings.impression_log = False
    return settings


async def test_the_switch_turns_the_log_off(log_off, tailor_server, stubs):
    rec, profiles, admin = stubs
    reply = await recommend(rec, "quiet")
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("q1", "quiet", "click", reply.items[0].item_id, request_id=reply.request_id)]))
    assert await impressions_of(tailor_server, "quiet") == {}
    assert (await admin.GetModelStats(apb.GetModelStatsRequest())).rows == []


async def test_cli_stats_and_training_export_of_the_log(tailor_server, stubs, tmp_path):
    import json

    from tests.conftest import run_module
    rec, profiles, _ = stubs
    known = await recommend(rec, "exp", channel="push", context={"email": "e@x.org", "page": "p"})
    await recommend(rec, "anon")
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        event("e1", "exp", "click", known.items[1].item_id, request_id=known.request_id)]))
    target = f"127.0.0.1:{tailor_server.port}"
    out = await asyncio.to_thread(run_module, "clients", "model", "stats", "--server", target,
                                  "--channel", "push", "-k", "2", "--timeout", "30")
    (row,) = json.loads(out.stdout)["rows"]
    assert (row["channel"], row["impressions"], row["clicked"]) == ("push", 1, 1)
    assert [(r["k"], r["value"]) for r in row["ctr"]] == [(2, 1.0)]
    await asyncio.to_thread(run_module, "training", "export", "--server", target, "--out",
                            str(tmp_path / "x" / "interactions.csv"), "--impressions")
    lines = (tmp_path / "x" / "impressions.jsonl").read_text().splitlines()
    rows = {r["request_id"]: r for r in map(json.loads, lines)}
    assert len(rows) == 2
    exp = rows[known.request_id]
    assert exp["user_id"] == "exp" and exp["user_ref"] and exp["channel"] == "push"
    assert exp["first_click"] == 2 and exp["clicks"] == 1
    assert exp["context"]["page"] == "p" and "e@x.org" not in lines[0] + lines[1]  # masked: no pii-reader
    assert [i["item_id"] for i in exp["items"]] == [i.item_id for i in known.items]
    assert [i["clicked"] for i in exp["items"]] == [False, True] + [False] * 8
    (anon,) = [r for r in rows.values() if r is not exp]
    assert anon["user_id"] == "" and anon["user_ref"] != exp["user_ref"]  # no profile: hash only


@pytest.fixture
def small_messages(settings):
    settings.grpc_max_message_bytes = 40_000
    return settings


async def test_an_answer_too_large_to_send_is_refused_and_not_logged(small_messages, tailor_server,
                                                                      stubs):
    """An answer past the message limit never reaches its caller: INVALID_ARGUMENT naming what
    to ask less of, and no impression (before, gRPC's own 'Sent message larger than max' after
    the answers were logged: 100 impressions of a RecommendBatch nobody received)."""
    rec, _, _ = stubs
    batch = rpb.RecommendBatchRequest(requests=[
        rpb.RecommendRequest(user_id=f"big-{n}", k=100) for n in range(10)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rec.RecommendBatch(batch)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[].k: the answer takes" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rec.Recommend(rpb.RecommendRequest(user_id="big-one", k=1000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("k: the answer takes")
    for user in ["big-one"] + [f"big-{n}" for n in range(10)]:
        assert await impressions_of(tailor_server, user) == {}
    fits = await rec.RecommendBatch(rpb.RecommendBatchRequest(requests=batch.requests[:2]))
    assert list(await impressions_of(tailor_server, "big-1")) == [fits.responses[1].request_id]
    one = await recommend(rec, "big-one", k=100)
    assert list(await impressions_of(tailor_server, "big-one")) == [one.request_id]


@pytest.fixture
def slow_flush(settings):
    settings.impression_flush_seconds = 3600.0
    return settings


async def test_buffered_answers_hold_nothing_the_garbage_collector_tracks(slow_flush, tailor_server,
                                                                          stubs):
    """A buffered answer that stays tracked is promoted to the oldest generation and sets off
    full collections that stop every thread (docs/performance.md, "Tail latency")."""
    import gc
    rec, _, _ = stubs
    replies = [await recommend(rec, f"gc{i}", **kw)
               for i, kw in enumerate([{}, {"context": {"page": "home"}}])]
    log = tailor_server.impressions.log
    assert len(log._buf) == 2
    for _ in range(2):  # a collection untracks each tuple holding only untracked objects; one
        gc.collect()    # pass may see an answer before its context tuple
    assert [gc.is_tracked(answer) for answer in log._buf] == [False, False]
    from contract.items import item_code
    for i, reply in enumerate(replies):  # written as before: the id finds the bundle again
        imp = (await impressions_of(tailor_server, f"gc{i}"))[reply.request_id]
        assert imp.model_version == reply.model_version != ""
        assert imp.items.tolist() == [item_code(it.item_id) for it in reply.items]


async def test_a_replaced_bundle_is_let_go_once_its_answers_are_written(tailor_server, stubs,
                                                                       second_bundle):
    from clients import TailorClient
    rec, _, _ = stubs
    log = tailor_server.impressions.log
    before = await recommend(rec, "swap")
    old = tailor_server.registry.current()
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
        await asyncio.to_thread(client.push_bundle, second_bundle)
    after = await recommend(rec, "swap")
    assert before.model_version != after.model_version
    deadline = time.time() + 10
    while any(b is old for b in log._bundles.values()) and time.time() < deadline:
        await asyncio.sleep(0.1)  # flushed every 0.5 s, then forgotten
    assert not any(b is old for b in log._bundles.values()) and len(log._bundles) <= 1
    logged = await impressions_of(tailor_server, "swap")
    assert [logged[r.request_id].model_version for r in (before, after)] == [
        before.model_version, after.model_version]


async def test_clicks_join_answers_logged_before_the_user_id_key_was_rotated(tmp_path, demo_bundle):
    """Answers are filed under the `user-id` key of their time; after a rotation (and the
    restart that loads it) clicks on them, with and without request id, still join."""
    from server.security.secrets import Secrets
    from tests.conftest import server_settings, serving
    settings = server_settings(tmp_path, demo_bundle)
    async with serving(settings) as (server, ch):
        rec = rpb_grpc.RecommendationServiceStub(ch)
        named = await recommend(rec, "rot")
        await asyncio.sleep(0.01)
        unnamed = await recommend(rec, "rot", channel="app")
        old_kid = server.secrets["user-id"].kid
    Secrets.load(settings.secrets_dir, generate=False).rotate("user-id")
    async with serving(settings) as (server, ch):
        assert server.secrets["user-id"].kid != old_kid
        profiles = pb_grpc.ProfileServiceStub(ch)
        await profiles.TrackEvents(pb.TrackEventsRequest(events=[
            event("r1", "rot", "click", named.items[2].item_id, request_id=named.request_id),
            event("r2", "rot", "add_to_cart", unnamed.items[4].item_id)]))
        log = server.impressions.log
        with log.store.read() as txn:
            found = log.store.table("impressions").scan_prefix(txn, log.user_prefix("rot", old_kid))
        from server.impressions.records import decode
        got = {k.rsplit(b"\x1f", 1)[1].decode(): decode(v) for k, v in found}
        assert (got[named.request_id].first_click, got[named.request_id].clicks) == (2, 1)
        assert got[unnamed.request_id].add_to_carts == 1


async def stored_impressions(server, user):
    """Every stored impression of `user`, oldest first (two may share a request id)."""
    log = server.impressions.log
    await log.flushed()
    with log.store.read() as txn:
        found = log.store.table("impressions").scan_prefix(txn, log.user_prefix(user))
    from server.impressions.records import decode
    return [(k.rsplit(b"\x1f", 1)[1].decode(), decode(v)) for k, v in found]


async def test_a_retried_call_with_its_request_id_is_logged_once(tailor_server, stubs):
    # A client (or gRPC's retry of UNAVAILABLE) repeats a call under the x-request-id of one
    # whose answer it lost: the same answer shown once is one impression, not two.
    rec, _, admin = stubs
    meta = (("x-request-id", "retry-1"),)
    ask = rpb.RecommendRequest(user_id="rt", k=5, channel="web", context={"page": "home"})
    first = await rec.Recommend(ask, metadata=meta)
    await tailor_server.impressions.log.flushed()  # committed apart, as by another worker
    again = await rec.Recommend(ask, metadata=meta)
    assert [i.item_id for i in again.items] == [i.item_id for i in first.items]
    batch = rpb.RecommendBatchRequest(requests=[rpb.RecommendRequest(user_id="rt", k=3)])
    await rec.RecommendBatch(batch, metadata=(("x-request-id", "retry-2"),))
    await rec.RecommendBatch(batch, metadata=(("x-request-id", "retry-2"),))
    logged = await stored_impressions(tailor_server, "rt")
    assert [rid for rid, _ in logged] == ["retry-1", "retry-2.0"]
    row = (await stats(admin, channel="web"))[(first.model_version, "web")]
    assert row.impressions == 1
    # another answer under the id (another widget of the page) and calls without an id count
    await rec.Recommend(rpb.RecommendRequest(user_id="rt", k=4, channel="web"), metadata=meta)
    await rec.Recommend(ask)
    await rec.Recommend(ask)
    assert len(await stored_impressions(tailor_server, "rt")) == 5
    # the clients name each call, so that gRPC's retries of it are repeats
    from clients.aio import AsyncTailorClient
    async with AsyncTailorClient(f"127.0.0.1:{tailor_server.port}") as client:
        named = [(await client.recommend("rt", 5)).request_id for _ in range(2)]
    assert all(len(n) == 32 for n in named) and named[0] != named[1]
