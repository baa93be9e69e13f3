"""Campaigns as a marketer runs them, through a real server: concurrent decisions of a campaign
of several channels under a frequency cap (across two workers), and a fixed split changed while
it runs (the split check of GetCampaignStats)."""
import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from server.campaigns.records import PENDING, DecisionRecord, Fallback
from server.campaigns.repository import CampaignRepository
from server.campaigns.spec import Campaign, CampaignSpec, Variant
from server.store import Store

DAY = 86400.0


def push_then_email(cid="c1", **kw) -> pb.CampaignSpec:
    return pb.CampaignSpec(
        campaign_id=cid, channel="push", channels=["push", "email"], policy="bernoulli_ts",
        variants=[pb.Variant(id="a"), pb.Variant(id="b")], reward_window_seconds=3600,
        frequency_caps=[pb.FrequencyCap(channel="push", max=1, window_seconds=DAY)], **kw)


def _choose_at_once(target: str, users: list[str], cid: str = "c1"
                    ) -> list[pb.ChooseVariantResponse]:
    """A ChooseVariant per entry of `users`, all at once over 8 connections of their own
    (spread over the workers)."""
    chans = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(8)]
    try:
        stubs = [pb_grpc.CampaignServiceStub(c) for c in chans]
        with ThreadPoolExecutor(len(users)) as pool:
            calls = [pool.submit(stubs[i % 8].ChooseVariant, pb.ChooseVariantRequest(
                campaign_id=cid, user_id=u), timeout=60) for i, u in enumerate(users)]
            return [c.result() for c in calls]
    finally:
        for c in chans:
            c.close()


def test_concurrent_decisions_capped_on_push_fall_back_to_email(server_process, tmp_path):
    """Eight ChooseVariant calls at once for each of eight users of a push + email campaign (one
    push a day), over two workers: calls that read the same history (no push yet) and drew push
    all chose it, and the writer, which alone sees the others, finds all but the first over the
    push cap. They go by email, which the user may be contacted on and the cap leaves free,
    instead of being suppressed `frequency_cap` (on main: 3 of 32 calls, four a user, were):
    the cap holds (at most one push a user) and nobody is refused."""
    server = server_process(tmp_path / "data", workers=2, env={"TAILOR_LMDB_SYNC": "false"})
    users = [f"u{i}" for i in range(8)]
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.CampaignServiceStub(ch)
        stub.CreateCampaign(pb.CreateCampaignRequest(spec=push_then_email()), timeout=30)
        for u in users:
            ppb_grpc.ProfileServiceStub(ch).SetConsent(ppb.SetConsentRequest(
                user_id=u, channel="email", opted_in=True, source="test"), timeout=30)
        got = _choose_at_once(server.target, users * 8)
        exported = {r.decision_id: r for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
            campaign_id="c1", include_pending=True, include_suppressed=True), timeout=30)}
    assert [d.reason for d in got if d.suppressed] == []
    for u in users:
        mine = [d.channel for d, who in zip(got, users * 8) if who == u]
        assert mine.count("push") <= 1 and mine.count("email") == 8 - mine.count("push")
    assert {exported[d.decision_id].channel for d in got} == {d.channel for d in got}


NOW = 1.8e9
PUSH_CAP = (("push", 1, DAY),)


def _decision(i: int, channel: str, p: float, choices=()) -> DecisionRecord:
    return DecisionRecord(f"d{i}", "c", "u", NOW, 0, 0.5, None, [], 0, "a", PENDING,
                          NOW + 3600, False, channel, 0.0, "", PUSH_CAP if channel == "push"
                          else (), p, 1.0, False, b"", choices)


def test_the_writer_logs_a_fallback_with_the_probability_of_ending_there(tmp_path):
    """The decision log's own transaction, on a real store: a push after the user's push of the
    day falls back on email, logged with the probability the draw and the fallback together
    had of email (0.7 + 0.3 = 1); an email drawn directly then takes push's mass too (it is
    where a push would have gone); with three channels (push 0.5, sms 0.3, email 0.2) and push
    capped, sms takes push's mass (0.8) and email keeps its own; with no choices (a message's
    decision) the capped push is refused as before."""
    store = Store(tmp_path / "store", sync=False)
    spec = CampaignSpec("c", channel="push", channels=("push", "email", "sms"),
                        variants=(Variant("a"), Variant("b"))).validated()
    repo = CampaignRepository(store)
    repo.create(Campaign(spec), spec.new_state())
    two = (("push", PUSH_CAP, 0.7), ("email", (), 0.3))
    three = (("push", PUSH_CAP, 0.5), ("sms", (), 0.3), ("email", (), 0.2))
    got = repo.log_decisions([_decision(0, "push", 0.7, two), _decision(1, "push", 0.7, two),
                              _decision(2, "email", 0.3, two), _decision(3, "push", 0.5, three),
                              _decision(4, "sms", 0.3, three), _decision(5, "email", 0.2, three),
                              _decision(6, "push", 1.0)])
    assert got == ["", Fallback("email", 1.0), Fallback("email", 1.0), Fallback("sms", 0.8),
                   Fallback("sms", 0.8), "", "frequency_cap"]
    logged = {r["decision_id"]: r for chunk in repo.log.export("c", include_pending=True,
                                                              include_suppressed=True)
              for r in chunk}
    assert [(logged[f"d{i}"]["channel"], logged[f"d{i}"]["channel_propensity"],
             logged[f"d{i}"]["status"]) for i in range(7)] == [
        ("push", 0.7, "pending"), ("email", 1.0, "pending"), ("email", 1.0, "pending"),
        ("sms", 0.8, "pending"), ("sms", 0.8, "pending"), ("email", 0.2, "pending"),
        ("push", 1.0, "suppressed")]
    assert [(e["channel"], e["decision_id"]) for e in repo.contacts_of("u")] == [
        ("push", "d0"), ("email", "d1"), ("email", "d2"), ("sms", "d3"), ("sms", "d4"),
        ("email", "d5")]
    store.close()


@pytest.fixture
def settings(tmp_path):
    """No bundle needed: campaigns do not use the recommender."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets")


def fixed(cid="ab", weights=(1.0, 1.0)) -> pb.CampaignSpec:
    return pb.CampaignSpec(campaign_id=cid, channel="web", policy="fixed",
                           variants=[pb.Variant(id=f"v{i}", weight=w) for i, w in enumerate(weights)])


async def _choose_users(stub, users, cid="ab") -> list[pb.ChooseVariantResponse]:
    """A decision for each of `users`, each rewarded (1 for every fourth user, else 0)."""
    gate = asyncio.Semaphore(32)

    async def one(i, user):
        async with gate:
            d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id=cid, user_id=user))
            await stub.ReportReward(pb.ReportRewardRequest(decision_id=d.decision_id,
                                                           reward=float(i % 4 == 0)))
            return d
    return await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))


async def _srm(stub, cid="ab") -> list[tuple[float, bool]]:
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id=cid))
    return [(row.srm_pvalue, row.srm_mismatch) for row in st.ab]


@pytest.mark.parametrize("change", ["append", "reweight"])
async def test_a_split_changed_while_it_runs_raises_no_sample_ratio_mismatch(channel, change):
    """A 50/50 test run on 2,000 users, then changed by UpdateCampaign (a third variant
    appended, all equal; or the split moved to 90/10), then run on 300 more: each user gets
    the arm the new split gives, so the decisions follow it, yet the split check compared every
    decision ever made with the new weights (on main: p ~1e-90 and ~1e-70, mismatch); it
    counts the decisions made since the split last changed."""
    stub = pb_grpc.CampaignServiceStub(channel)
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=fixed()))
    await _choose_users(stub, [f"a{i}" for i in range(2000)])
    assert all(not mismatch for _, mismatch in await _srm(stub))
    weights = (1.0, 1.0, 1.0) if change == "append" else (9.0, 1.0)
    await stub.UpdateCampaign(pb.UpdateCampaignRequest(spec=fixed(weights=weights)))
    got = await _choose_users(stub, [f"b{i}" for i in range(300)])
    assert {d.variant_id for d in got} == {f"v{i}" for i in range(len(weights))}
    rows = await _srm(stub)
    assert len(rows) == len(weights) - 1
    assert all(p > 1e-3 and not mismatch for p, mismatch in rows), rows
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="ab"))
    assert sum(v.decisions for v in st.variants) == 2300  # the counts themselves stay whole


async def test_archiving_while_a_plan_decides_a_batch_stops_it_there(tmp_path):
    """A PlanCampaign of one 100,000-user message (400 slices), the campaign archived right
    after it is sent: on main the plan went on deciding the message from the campaign as read
    at its start (10,000 users: all answered live ~200 ms after ArchiveCampaign returned, sync
    on). Each slice reads the live campaign: the stream ends FAILED_PRECONDITION, and the
    decisions its unanswered batch logged are withdrawn (nothing left pending: no cap, no
    reward)."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        limits=Limits(plan_batch_users=100_000))
    async with serving(settings) as (server, _), grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as ch:  # room for the whole answer (~7 MB) where a plan answers it
        stub = pb_grpc.CampaignServiceStub(ch)
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=fixed("p")))
        sent, done = asyncio.Event(), asyncio.Event()

        async def requests():
            yield pb.PlanCampaignRequest(campaign_id="p",
                                         user_ids=[f"u{i}" for i in range(100_000)])
            sent.set()
            await done.wait()
        call = stub.PlanCampaign(requests())
        answered = []

        async def read():
            try:
                async for answer in call:
                    answered.extend(answer.decisions)
                    done.set()  # the batch is answered: the stream may end
            finally:
                done.set()
        reader = asyncio.create_task(read())
        await sent.wait()
        counters = server.campaigns.repo.stats_snapshot
        for _ in range(6000):  # archived once a first slice is logged (a machine's load may
            if sum(counters("p")[2]["decisions"]):  # delay the plan past a sent message)
                break
            await asyncio.sleep(0.01)
        await stub.ArchiveCampaign(pb.ArchiveCampaignRequest(campaign_id="p"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(reader, 120)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and answered == []
        for _ in range(100):  # withdrawn once their commits settle
            logged = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
                campaign_id="p", include_pending=True, include_suppressed=True))]
            if all(r.status == "suppressed" for r in logged):
                break
            await asyncio.sleep(0.05)
        assert logged and {(r.status, r.reason) for r in logged} == {("suppressed", "withdrawn")}
        assert len(logged) < 100_000


def test_a_plan_answers_the_channel_and_propensity_the_writer_fell_back_on():
    """A PlanCampaign slice's commit answers each row: "" (as decided), a reason (suppressed),
    or a `Fallback` (logged on another channel): the batch answered says what was logged."""
    from server.campaigns.plan import PlanBatch, Planner
    batch = PlanBatch(["a", "b", "c"], ["d1", "d2", "d3"], [0, 1, 0], [0.5, 0.5, 0.5],
                      ["v0", "v1", "v0"], ["push", "push", "push"], [0.0] * 3, [""] * 3)
    out = Planner._outcome(batch, ["", Fallback("email", 1.0), "frequency_cap"])
    assert (out.channels, out.channel_propensities) == (["push", "email", "push"], [1.0, 1.0, 1.0])
    assert (out.arms, out.variant_ids, out.reasons) == ([0, 1, -2], ["v0", "v1", ""],
                                                        ["", "", "frequency_cap"])


async def test_two_decisions_from_one_read_fall_back_and_a_fallback_nobody_received_is_withdrawn(
        tmp_path):
    """The domain with its writer process on a real store: two decisions for one user queued
    before either commits (each read the history empty) both chose push, the campaign's first
    channel; the second falls back on email at the commit. Its caller giving up (a deadline)
    withdraws it as any decision logged pending: its email contact is forgotten, the push's
    stays."""
    from types import SimpleNamespace

    from server.campaigns import Campaigns
    from server.contact import ContactPolicy, FrequencyCap
    from server.contact.caps import ContactHistory
    from server.profiles import Profiles
    store = Store(tmp_path / "store", sync=False)
    consent = {"email": "opt_out", "sms": "opt_in", "push": "opt_out", "web": "none",
               "app": "none"}
    campaigns = Campaigns(store, Profiles(store, SimpleNamespace(active=None)),
                          contact=ContactPolicy(consent))
    await campaigns.create(CampaignSpec("c", channel="push", channels=("push", "email"),
                                        variants=(Variant("a"), Variant("b")),
                                        frequency_caps=(FrequencyCap("push", 1, DAY),)))
    first = campaigns.decide("c", "ann", {}, fallback=True)
    second = campaigns.decide("c", "ann", {}, fallback=True)
    assert (first.choice.channel, second.choice.channel) == ("push", "push")
    assert (await first.logged()).channel == "push"
    campaigns.abandon(second)  # its caller gave up: nobody received it
    await campaigns.close()
    # read by scans: the writer child keys users with its own store-id key, which a server
    # started earlier in this process may have replaced here (`store.tokens.use_key`)
    records = {r["decision_id"]: r for chunk in campaigns.repo.log.export(
        "c", include_pending=True, include_suppressed=True) for r in chunk}
    dropped = records[second.choice.decision_id]
    assert (dropped["channel"], dropped["status"], dropped["reason"]) == (
        "email", "suppressed", "withdrawn")
    with store.read() as txn:
        contacts = [e for _, raw in store.table("contacts").items(txn, b"")
                    for e in ContactHistory.decode(raw).entries]
    assert [(e[1], e[2]) for e in contacts] == [("push", first.choice.decision_id)]
    store.close()


async def test_decisions_made_before_a_split_change_and_withdrawn_after_leave_its_check_whole(
        channel, tailor_server):
    """A 90/10 test: a PlanCampaign batch of 200 users logged, then the split moved to 50/50,
    then the stream closed before the batch was answered (its ~180/20 decisions withdrawn),
    then 400 users decided at 50/50. The split check counted the decisions since the change
    as all decisions less those before it, so the withdrawal took the old split's decisions
    out of the new split's (on main: p = 5.5e-25, srm_mismatch true); a decision made
    before the change leaves the counts before it when it is withdrawn."""
    from server.campaigns import PlanRequest
    from tests.server.test_plan_campaign import _until, open_plan
    stub = pb_grpc.CampaignServiceStub(channel)
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=fixed(weights=(9.0, 1.0))))
    requests, batches = open_plan(tailor_server)
    await requests.put(PlanRequest("ab", [f"w{i}" for i in range(200)]))
    await batches.__anext__()  # logged and yielded, never handed to the transport
    await stub.UpdateCampaign(pb.UpdateCampaignRequest(spec=fixed(weights=(1.0, 1.0))))
    await batches.aclose()

    async def withdrawn():
        return [r.reason async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
            campaign_id="ab", include_suppressed=True))].count("withdrawn") == 200
    assert await _until(withdrawn, seconds=20.0)
    await _choose_users(stub, [f"n{i}" for i in range(400)])
    rows = await _srm(stub)
    assert len(rows) == 1 and rows[0][0] > 1e-3 and not rows[0][1], rows
