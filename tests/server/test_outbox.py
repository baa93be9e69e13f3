"""The listeners' outbox (server/profiles/outbox.py): what an accepted event changes elsewhere (a
bounce's suppression, a campaign reward, the impression join) is applied exactly once, even
when the process dies between the batch's commit and its listeners, and a retry of the batch is
only a duplicate."""
import asyncio
import os
import signal
import subprocess
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import model_admin_pb2 as apb
from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from tests.conftest import server_settings, serving

EMAIL = "ann@example.org"


class Stubs:
    def __init__(self, channel):
        self.rec = rpb_grpc.RecommendationServiceStub(channel)
        self.profiles = pb_grpc.ProfileServiceStub(channel)
        self.admin = apb_grpc.ModelAdminServiceStub(channel)
        self.campaigns = cpb_grpc.CampaignServiceStub(channel)


def campaign() -> cpb.CreateCampaignRequest:
    return cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="c1", policy="bernoulli_ts", channel="push", reward_window_seconds=3600,
        variants=[cpb.Variant(id="v0"), cpb.Variant(id="v1")],
        rewards=[cpb.RewardRule(event_type="click", value=1.0)]))


def batch(item: str, request_id: str, decision_id: str) -> pb.TrackEventsRequest:
    """A bounce of ann's email, and a click on a recommended item that names ann's decision
    (it rewards the decision and joins the impression)."""
    now = time.time() - 1
    return pb.TrackEventsRequest(events=[
        pb.Event(event_id="b1", user_id="ann", type="email_bounce", timestamp=now),
        pb.Event(event_id="c1", user_id="ann", type="click", item_id=item, timestamp=now,
                 request_id=request_id, attributes={"decision_id": decision_id})])


async def prepare(s: Stubs):
    """ann's email, a campaign decision and a Recommend answer, all committed; returns
    (decision id, answer)."""
    await s.profiles.UpsertAttributes(pb.UpsertAttributesRequest(user_id="ann",
                                                                 attributes={"email": EMAIL}))
    await s.campaigns.CreateCampaign(campaign())
    decision = await s.campaigns.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="c1",
                                                                        user_id="ann"))
    answer = await s.rec.Recommend(rpb.RecommendRequest(user_id="ann", k=5))
    await s.admin.GetModelStats(apb.GetModelStatsRequest())  # the answer written to the log
    return decision.decision_id, answer


async def effects(s: Stubs, decision_id: str, version: str) -> tuple:
    """(ann's address suppressed and why, the decision's status and reward, the clicks joined
    to the version's answers)."""
    listed = await s.profiles.CheckSuppression(pb.SuppressionAddress(email=EMAIL))
    log = [r async for r in s.campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True))]
    rows = (await s.admin.GetModelStats(apb.GetModelStatsRequest(model_version=version))).rows
    clicks = sum(r.clicks for r in rows if r.channel == "all")
    return ((listed.suppressed, listed.reason),
            [(r.status, r.reward) for r in log if r.decision_id == decision_id], clicks)


APPLIED = ((True, "bounce"), [("rewarded", 1.0)], 1)


async def crashed(*a, **kw):
    """A listener that never runs: the process died after the batch's commit."""


async def test_a_replay_after_a_partial_apply_applies_the_rest_and_counts_nothing_twice(
        tmp_path, demo_bundle, monkeypatch):
    settings = server_settings(tmp_path, demo_bundle)
    async with serving(settings) as (server, ch):
        s = Stubs(ch)
        decision_id, answer = await prepare(s)
        # the suppression and the impression join applied, then the process dies before the
        # campaigns writer's transaction
        monkeypatch.setattr(server.campaigns, "on_events", crashed)
        got = await s.profiles.TrackEvents(batch(answer.items[0].item_id, answer.request_id,
                                                 decision_id))
        assert got.accepted == 2
        assert (await effects(s, decision_id, answer.model_version))[::2] == ((True, "bounce"), 1)
    async with serving(settings) as (server, ch):  # the start replays what was left
        s = Stubs(ch)
        assert await effects(s, decision_id, answer.model_version) == APPLIED
        again = await s.profiles.TrackEvents(batch(answer.items[0].item_id, answer.request_id,
                                                   decision_id))
        assert (again.accepted, again.duplicates) == (0, 2)  # the client's retry changes nothing
        assert await server.profiles.replay_outbox(older_than=0) == 0
        assert await effects(s, decision_id, answer.model_version) == APPLIED


async def test_a_listener_that_fails_leaves_the_batch_accepted_and_the_others_applied(
        tmp_path, demo_bundle, monkeypatch):
    """The first listener's exception skipped every listener after it and failed TrackEvents
    (INTERNAL) for a batch already stored, whose retry is a duplicate: the others' effects
    waited for the periodic replay. Each listener now fails alone; the replay applies its part."""
    settings = server_settings(tmp_path, demo_bundle)
    async with serving(settings) as (server, ch):
        s = Stubs(ch)
        decision_id, answer = await prepare(s)

        async def broken(*a, **kw):
            raise OSError("the campaigns writer is gone")
        with monkeypatch.context() as patch:
            patch.setattr(server.suppressions, "on_events", broken)
            got = await s.profiles.TrackEvents(batch(answer.items[0].item_id, answer.request_id,
                                                     decision_id))
        assert got.accepted == 2
        listed, log, clicks = await effects(s, decision_id, answer.model_version)
        assert (listed, log, clicks) == ((False, ""), [("rewarded", 1.0)], 1)
        assert await server.profiles.replay_outbox(older_than=0) == 1  # the suppression's entry
        assert await effects(s, decision_id, answer.model_version) == APPLIED


async def test_a_reward_in_time_left_for_the_replay_counts_after_its_window(tmp_path,
                                                                            monkeypatch):
    """A click committed inside its decision's window whose campaign effects were left for the
    replay (the listener failed; a crash likewise) reached the writer after the window: the
    sweep had closed the decision with the default, 0, and the click's reward was refused. The
    sweep holds windows open while such a batch waits, and the reward is judged at its commit."""
    from server.config import Settings
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", campaign_sweep_seconds=0.2)
    async with serving(settings) as (server, ch):
        s = Stubs(ch)
        spec = campaign().spec
        spec.reward_window_seconds = 2.0
        await s.campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
        clicked, idle = [await s.campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id="c1", user_id=user)) for user in ("ann", "bob")]
        with monkeypatch.context() as patch:
            patch.setattr(server.campaigns, "on_events", crashed)
            got = await s.profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
                event_id="k1", user_id="ann", type="click", timestamp=time.time(),
                attributes={"decision_id": clicked.decision_id})]))
        assert got.accepted == 1

        async def log():
            return {r.decision_id: (r.status, r.reward) for r in [r async for r in
                    s.campaigns.ExportDecisions(cpb.ExportDecisionsRequest(include_pending=True))]
                    if r.status != "pending"}
        await asyncio.sleep(2.6)  # past both windows, sweeps included
        assert await log() == {}  # held open: the batch before their deadlines waits
        assert await server.profiles.replay_outbox(older_than=0) == 1
        await asyncio.sleep(0.6)
        assert await log() == {clicked.decision_id: ("rewarded", 1.0),
                               idle.decision_id: ("default", 0.0)}


async def test_a_sweep_held_by_a_waiting_batch_says_so_once(tmp_path, monkeypatch, caplog):
    """A campaigns entry left for the replay holds every campaign's windows open (up to its
    last replay, about five minutes): before, nothing said so, the operator saw decisions of
    other campaigns stay pending with no default reward. One warning per holding entry."""
    import logging

    from server.campaigns import handler
    from server.config import Settings
    monkeypatch.setattr(handler, "HOLD_WARNING_S", 1.0, raising=False)
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", campaign_sweep_seconds=0.2)
    async with serving(settings) as (server, ch):
        s = Stubs(ch)
        other = campaign().spec
        other.campaign_id, other.reward_window_seconds = "c2", 0.5
        await s.campaigns.CreateCampaign(campaign())
        await s.campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=other))
        clicked = await s.campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id="c1", user_id="ann"))
        with monkeypatch.context() as patch:
            patch.setattr(server.campaigns, "on_events", crashed)
            await s.profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
                event_id="k1", user_id="ann", type="click", timestamp=time.time(),
                attributes={"decision_id": clicked.decision_id})]))
        idle = await s.campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id="c2", user_id="bob"))

        async def status():
            return [r.status async for r in s.campaigns.ExportDecisions(
                cpb.ExportDecisionsRequest(campaign_id="c2", include_pending=True))
                if r.decision_id == idle.decision_id]
        with caplog.at_level(logging.WARNING, logger="tailor.campaigns"):
            await asyncio.sleep(2.5)  # past c2's window and the warning's delay, sweeps included
            assert await status() == ["pending"]  # held by c1's waiting batch
            told = [r.getMessage() for r in caplog.records if "stay open" in r.getMessage()]
            assert len(told) == 1 and "wait in the outbox for a replay" in told[0]
            assert "ann" not in told[0] and clicked.decision_id not in told[0]
        assert await server.profiles.replay_outbox(older_than=0) == 1
        await asyncio.sleep(0.6)
        assert await status() == ["default"]


def not_ready() -> bool:
    """`Impressions.before_write` that failed: the batch's join goes through its outbox entry
    (after the commit, or the replay's), as every join did before it ran in the write."""
    return False


async def test_a_click_is_joined_in_its_batchs_write_and_needs_no_entry(tmp_path, demo_bundle,
                                                                         monkeypatch):
    """The join ran in a write transaction of its own after the batch's commit (with its fsync),
    through an outbox entry: a crash in between left the click unjoined until a replay. It now
    runs in the batch's own transaction: joined with the commit, no entry written."""
    from server.store import keys
    settings = server_settings(tmp_path, demo_bundle)
    async with serving(settings) as (server, ch):
        s = Stubs(ch)
        decision_id, answer = await prepare(s)
        for listener in (server.campaigns, server.suppressions, server.impressions):
            monkeypatch.setattr(listener, "on_events", crashed)  # dead after the commit
        got = await s.profiles.TrackEvents(batch(answer.items[0].item_id, answer.request_id,
                                                 decision_id))
        assert got.accepted == 2
        assert (await effects(s, decision_id, answer.model_version))[2] == 1
        assert set(_entries(server)) == {b"suppression", b"campaigns"}
        with server.store.read() as txn:  # (no entry under the join's tag, by key)
            tags = [keys.outbox_parts(bytes(k))[1]
                    for k, _ in server.store.raw_table("outbox").items(txn)]
        assert b"impressions" not in tags


async def test_concurrent_replays_join_a_click_once(tmp_path, demo_bundle, monkeypatch):
    """Two replays of the same entries (two workers starting, a worker and the periodic
    replay): the join adds counts, and each entry is claimed in the join's transaction."""
    settings = server_settings(tmp_path, demo_bundle)
    async with serving(settings) as (server, ch):
        s = Stubs(ch)
        decision_id, answer = await prepare(s)
        for listener in (server.campaigns, server.suppressions, server.impressions):
            monkeypatch.setattr(listener, "on_events", crashed)
        monkeypatch.setattr(server.impressions, "before_write", not_ready)  # join via its entry
        await s.profiles.TrackEvents(batch(answer.items[0].item_id, answer.request_id, decision_id))
        # one entry per listener that follows an event of the batch: the bounce's suppression,
        # the click's campaigns and impressions
        assert server.profiles.outbox.count() == 3
        monkeypatch.undo()
        done = await asyncio.gather(*(server.profiles.replay_outbox(older_than=0)
                                      for _ in range(3)))
        assert sum(done) >= 3 and server.profiles.outbox.count() == 0
        assert await effects(s, decision_id, answer.model_version) == APPLIED


async def test_a_batchs_sends_are_counted_in_its_write_and_need_no_entry(tmp_path, monkeypatch):
    """Sends (no reward among the campaigns' events) were counted as contacts by the campaigns
    writer process after the batch's commit, in a transaction of its own (with its fsync),
    through an outbox entry. They are now counted in the batch's own transaction: with the
    commit, no entry written; a batch with a reward still goes through its entry."""
    from server.config import Settings
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    async with serving(settings) as (server, ch):
        monkeypatch.setattr(server.campaigns, "on_events", crashed)  # dead after the commit
        stub = pb_grpc.ProfileServiceStub(ch)
        now = time.time() - 1
        sends = [pb.Event(event_id=f"s{i}", user_id=f"user-{i % 3}", type=f"{c}_sent",
                          timestamp=now - i) for i, c in enumerate(("email", "push", "sms", "email"))]
        views = [pb.Event(event_id=f"v{i}", user_id="user-0", type="view", item_id=f"i{i}",
                          timestamp=now) for i in range(5)]
        got = await stub.TrackEvents(pb.TrackEventsRequest(events=[*views, *sends]))
        assert got.accepted == 9
        assert server.profiles.outbox.count() == 0
        contacts = server.campaigns.repo.contacts_of
        assert [(c["channel"], c["timestamp"]) for c in contacts("user-0")] == [
            ("email", pytest.approx(now - 3)), ("email", pytest.approx(now))]
        assert [c["channel"] for c in contacts("user-1")] == ["push"]
        assert [c["channel"] for c in contacts("user-2")] == ["sms"]
        rewarded = pb.Event(event_id="s9", user_id="user-1", type="push_sent", timestamp=now,
                            attributes={"decision_id": "d-1"})
        await stub.TrackEvents(pb.TrackEventsRequest(events=[rewarded]))
        assert set(_entries(server)) == {b"campaigns"}  # the writer process's, with its reward
        assert [c["channel"] for c in contacts("user-1")] == ["push"]


def _entries(server) -> dict[bytes, list[bytes]]:
    """{listener tag: the events keys its entries name} of every outbox entry (raw, as stored)."""
    from server.store import keys, outbox
    out: dict[bytes, list[bytes]] = {}
    with server.store.read() as txn:
        for key, stored in server.store.raw_table("outbox").items(txn):
            out.setdefault(keys.outbox_parts(key)[1], []).extend(outbox.parsed(stored)[1])
    return out


async def test_a_batch_writes_one_entry_per_listener_that_follows_one_of_its_events(
        tmp_path, monkeypatch):
    """Views write nothing; a batch with a send and a click among 50 views writes one entry for
    the campaigns and one for the join, naming those events by their events keys only."""
    from server.config import Settings
    from server.store import keys
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    async with serving(settings) as (server, ch):
        for listener in (server.campaigns, server.suppressions, server.impressions):
            monkeypatch.setattr(listener, "on_events", crashed)
            if hasattr(listener, "before_write"):  # joins and sends via their entries
                monkeypatch.setattr(listener, "before_write", not_ready)
        stub = pb_grpc.ProfileServiceStub(ch)
        now = time.time() - 1
        views = [pb.Event(event_id=f"v{i}", user_id=f"user-{i % 7}", type="view",
                          item_id=f"i{i}", timestamp=now) for i in range(50)]
        await stub.TrackEvents(pb.TrackEventsRequest(events=views))
        assert server.profiles.outbox.count() == 0  # nobody follows a view
        more = [pb.Event(event_id=f"w{i}", user_id=f"user-{i % 7}", type="view",
                         item_id=f"i{i}", timestamp=now) for i in range(50)]
        got = await stub.TrackEvents(pb.TrackEventsRequest(events=[
            *more, pb.Event(event_id="send-1", user_id="user-1", type="push_sent", timestamp=now),
            pb.Event(event_id="click-1", user_id="user-2", type="click", item_id="i3",
                     timestamp=now),
            pb.Event(event_id="v3", user_id="user-3", type="click", item_id="i3", timestamp=now)]))
        assert (got.accepted, got.duplicates) == (52, 1)
        assert server.profiles.outbox.count() == 2  # one batch, two listeners
        assert _entries(server) == {  # the duplicate (v3) is not named
            b"campaigns": [keys.event_key("user-1", now, "send-1")],
            b"impressions": [keys.event_key("user-2", now, "click-1")]}
        with server.store.read() as txn:
            raw = b"".join(k + v for k, v in server.store.raw_table("outbox").items(txn))
        assert b"user-" not in raw and b"send-1" not in raw and b"click-1" not in raw


async def test_erasure_applies_the_entries_naming_the_user_then_takes_them_out_of_the_rest(
        tmp_path, monkeypatch):
    """A bounce whose suppression a crash left in the outbox, then DeleteProfile: the address
    is listed (the list outlives the profile). An entry committed after that replay (a batch
    racing the erasure: the erasure's transaction alone here) stops naming the user's events:
    nothing of the user stays in the outbox, and their bounce goes unapplied with them."""
    from server.config import Settings
    from server.store import keys
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    async with serving(settings) as (server, ch):
        stub = pb_grpc.ProfileServiceStub(ch)
        for user in ("ann", "cy"):
            await stub.UpsertAttributes(pb.UpsertAttributesRequest(
                user_id=user, attributes={"email": f"{user}@example.org"}))
        monkeypatch.setattr(server.suppressions, "on_events", crashed)
        now = time.time() - 1
        await stub.TrackEvents(pb.TrackEventsRequest(events=[
            pb.Event(event_id="b1", user_id="ann", type="email_bounce", timestamp=now),
            pb.Event(event_id="b2", user_id="bob", type="email_bounce", timestamp=now)]))
        assert server.profiles.outbox.count() == 1
        monkeypatch.undo()
        await stub.DeleteProfile(pb.DeleteProfileRequest(user_id="ann"))
        assert server.profiles.outbox.count() == 0  # applied (bob has no address: nothing)
        listed = await stub.CheckSuppression(pb.SuppressionAddress(email=EMAIL))
        assert (listed.suppressed, listed.reason) == (True, "bounce")

        monkeypatch.setattr(server.suppressions, "on_events", crashed)
        await stub.TrackEvents(pb.TrackEventsRequest(events=[
            pb.Event(event_id="b3", user_id="cy", type="email_bounce", timestamp=now),
            pb.Event(event_id="b4", user_id="dee", type="email_bounce", timestamp=now)]))
        monkeypatch.undo()
        await asyncio.to_thread(server.profiles.repo.delete_user, "cy", server.profiles._erasers)
        assert _entries(server) == {b"suppression": [keys.event_key("dee", now, "b4")]}
        with server.store.read() as txn:
            raw = b"".join(k + v for k, v in server.store.raw_table("outbox").items(txn))
        assert keys.user_prefix("cy") not in raw
        assert await server.profiles.replay_outbox(older_than=0) == 1  # dee's: no address
        listed = await stub.CheckSuppression(pb.SuppressionAddress(email="cy@example.org"))
        assert not listed.suppressed
    async with serving(settings) as (server, ch):
        assert server.profiles.outbox.count() == 0


def _campaigns_writer(pid: int) -> int:
    """The pid of the server's campaigns writer process (forked by its zygote, a child)."""
    zygote = subprocess.run(["pgrep", "-P", str(pid), "-x", "tailor-zygote"],
                            capture_output=True, text=True).stdout.split()
    assert len(zygote) == 1, zygote
    out = subprocess.run(["pgrep", "-P", zygote[0], "-x", "tailor-campaign"],
                         capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def test_a_batch_committed_before_a_sigkill_gets_its_effects_once_at_restart(
        server_process, tmp_path, demo_bundle):
    """`python -m server` killed with SIGKILL after a batch's commit, before its listeners ran
    (the campaigns writer process, first of them, held stopped): the restart applies the
    suppression, the reward and the join, once; the client's retry is a duplicate."""
    data = tmp_path / "data"
    server = server_process(data, bundle=demo_bundle)

    async def before_the_crash():
        async with grpc.aio.insecure_channel(server.target) as ch:
            s = Stubs(ch)
            decision_id, answer = await prepare(s)
            writer = _campaigns_writer(server.proc.pid)
            os.kill(writer, signal.SIGSTOP)
            try:
                request = batch(answer.items[0].item_id, answer.request_id, decision_id)
                with pytest.raises(grpc.RpcError) as err:  # the listeners wait for the writer
                    await s.profiles.TrackEvents(request, timeout=3)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                profile = await s.profiles.GetProfile(pb.GetProfileRequest(user_id="ann"))
                assert profile.features.n_events == 2  # committed
            finally:
                server.kill()  # the stopped writer too
            return decision_id, answer, request

    decision_id, answer, request = asyncio.run(before_the_crash())

    async def after(expect_replay: bool):
        restarted = server_process(data)
        async with grpc.aio.insecure_channel(restarted.target) as ch:
            s = Stubs(ch)
            assert await effects(s, decision_id, answer.model_version) == APPLIED
            retry = await s.profiles.TrackEvents(request)
            assert (retry.accepted, retry.duplicates) == (0, 2)
            assert await effects(s, decision_id, answer.model_version) == APPLIED
        log = restarted.stop()
        assert ("outbox: replaying" in log) == expect_replay
        assert EMAIL not in log

    asyncio.run(after(expect_replay=True))
    asyncio.run(after(expect_replay=False))  # applied once: nothing left, nothing counted twice


async def test_entries_an_older_binarys_erasure_left_are_dropped_by_the_next_replay(
        tmp_path, monkeypatch):
    """An older binary's DeleteProfile does not know the outbox: it deletes the user's events
    and shreds their data key, and leaves the entries naming those events; a replay finds them
    gone and drops the entries."""
    from server.config import Settings
    from server.store import keys
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    async with serving(settings) as (server, ch):
        assert server.store.datakeys is not None  # encryption at rest (the default)
        monkeypatch.setattr(server.suppressions, "on_events", crashed)
        await pb_grpc.ProfileServiceStub(ch).TrackEvents(pb.TrackEventsRequest(events=[
            pb.Event(event_id="b1", user_id="ann", type="email_bounce", timestamp=time.time() - 1)]))
        events = server.store.table("events")

        def older_erasure(txn):
            events.delete_prefix(txn, keys.user_prefix("ann"))
            server.store.shred(txn, "ann")
        server.store.write(older_erasure, erasure=True)
        assert server.profiles.outbox.count() == 1
        assert await server.profiles.replay_outbox(older_than=0) == 0
        assert server.profiles.outbox.count() == 0


async def test_the_joins_unmatched_events_stay_in_the_entry_for_the_retry_or_the_replay(tmp_path):
    """Two workers: a batch's two clicks, one on an answer this worker wrote, one on an answer
    the other still buffers. The join joins the first and puts the second back in the batch's
    entry; a replay then (the worker stopped before its retry) joins it, once; the stopped
    worker's retry, had it run, finds the entry gone and joins nothing twice."""
    from server.impressions.join import ImpressionJoin
    from server.impressions.log import ImpressionLog
    from server.security.secrets import Keyring
    from server.store import Store, keys, outbox
    from server.store.outbox import Batch
    from tests.server.test_impression_join_retry import _answer, _click

    store = Store(tmp_path / "store", sync=False)
    try:
        ring = Keyring.generate("user-id")
        here, there = ImpressionLog(store, ring), ImpressionLog(store, ring)
        join = ImpressionJoin(here, retry_s=3600.0)  # the retry never comes in this test
        _answer(here, "r1", "ann")
        _answer(there, "r2", "ann")  # buffered in the other worker
        clicks = [_click("ann", "r1", "i1"), _click("ann", "r2", "i2")]
        event_keys = [keys.event_key(ev.user_id, ev.timestamp, ev.event_id) for ev in clicks]
        entry = keys.outbox_key(keys.millis(time.time()), outbox.batch_id(), b"impressions")
        box = store.table("outbox")
        store.write(lambda txn: box.put(txn, entry, outbox.value(event_keys)))
        await join.on_events(clicks, Batch(entry, event_keys))
        with store.read() as txn:
            assert outbox.parsed(box.get(txn, entry)) == (0, event_keys[1:])
        assert len(join._retries) == 1
        join.close()  # the worker stops before its retry
        there.flush()
        unmatched = await asyncio.to_thread(join._join_pairs, [(clicks[1], event_keys[1])],
                                            entry, True)  # what the replay hands the join
        assert unmatched == []
        with store.read() as txn:
            assert box.get(txn, entry) is None
        # a second try of the same batch (the retry, another replay) joins nothing
        await asyncio.to_thread(join._join_pairs, list(zip(clicks, event_keys)), entry, True)
        clicked = {rid: imp.clicks for rid, imp in here.of_user("ann")}
        assert clicked == {"r1": 1, "r2": 1}
    finally:
        store.close()
