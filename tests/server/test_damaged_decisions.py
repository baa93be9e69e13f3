"""One damaged decision record (a record of the `decisions` table that does not open, sealed,
or does not decode) fails its own decision only: the reward sweep, a batch of tracked events,
ReportReward calls sharing a commit, withdrawals and the user's erasure go on for the others."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import serving
from tests.server.test_damaged_contacts import damage_record

BAD = "damaged-user"
OTHERS = [f"u{i:02d}" for i in range(10)]


@pytest.fixture(params=[True, False], ids=["sealed", "plain"])
def settings(tmp_path, request):
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets", encrypt_at_rest=request.param,
                    campaign_sweep_seconds=0.1)


@pytest.fixture
async def served(settings):
    async with serving(settings) as (server, channel):
        yield server, pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)


async def decided(stub, window: float = 3600.0) -> dict[str, str]:
    """{user: decision id} of BAD and OTHERS in a new web campaign (no consent or caps)."""
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=pb.CampaignSpec(
        campaign_id="c1", channel="web", policy="bernoulli_ts",
        variants=[pb.Variant(id="a"), pb.Variant(id="b")], reward_window_seconds=window,
        rewards=[pb.RewardRule(event_type="click", value=1)])))
    out = {}
    for u in [BAD, *OTHERS]:
        d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="c1", user_id=u))
        out[u] = d.decision_id
    return out


def damage_decision(server, user_id: str, decision_id: str) -> None:
    from server.store.keys import decision_key
    damage_record(server.store, "decisions", decision_key(user_id, decision_id))


async def pending(stub) -> int:
    return (await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))).pending


async def test_the_sweep_closes_every_other_window_and_leaves_the_damaged_one(served):
    server, stub, _ = served
    ids = await decided(stub, window=0.3)
    damage_decision(server, BAD, ids[BAD])
    deadline = time.time() + 5
    while await pending(stub) > 1 and time.time() < deadline:
        await asyncio.sleep(0.1)
    assert await pending(stub) == 1  # the damaged one's: nothing can close it
    assert not server.campaigns.repo.has_due(time.time())  # and no pass reads it again


async def test_a_tracked_batch_naming_a_damaged_decision_rewards_the_others(served):
    server, stub, profiles = served
    ids = await decided(stub)
    damage_decision(server, BAD, ids[BAD])
    now = time.time()
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[
        ppb.Event(event_id=f"click-{u}", user_id=u, type="click", timestamp=now,
                  attributes={"decision_id": ids[u]}) for u in [BAD, *OTHERS]]))
    deadline = time.time() + 5
    while await pending(stub) > 1 and time.time() < deadline:
        await asyncio.sleep(0.05)
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))
    assert (sum(v.rewards for v in st.variants), st.pending) == (len(OTHERS), 1)
    assert server.profiles.outbox.count() == 0


async def test_rewards_sharing_a_commit_fail_the_damaged_decision_alone(served):
    server, stub, _ = served
    ids = await decided(stub)
    damage_decision(server, BAD, ids[BAD])
    answers = await asyncio.gather(*(stub.ReportReward(pb.ReportRewardRequest(
        decision_id=ids[u], reward=1)) for u in [*OTHERS[:5], BAD, *OTHERS[5:]]),
        return_exceptions=True)
    bad = answers.pop(5)
    assert not [a for a in answers if isinstance(a, Exception)]
    assert bad.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "damaged" in bad.details() and BAD not in bad.details()
    # the same rewards in one transaction (whether the calls above shared one is timing's):
    from server.campaigns.errors import DecisionDamaged
    from server.campaigns.records import RewardRequest
    got = server.campaigns.repo.apply_rewards(
        [RewardRequest(ids[u], 1.0) for u in [BAD, *OTHERS]], time.time())
    assert isinstance(got[0], DecisionDamaged)
    assert [o.duplicate for o in got[1:]] == [True] * len(OTHERS)


async def test_withdrawals_withdraw_every_other_decision(served):
    server, stub, _ = served
    ids = await decided(stub)
    damage_decision(server, BAD, ids[BAD])
    done = await server.campaigns.withdraw([ids[u] for u in [BAD, *OTHERS]])
    assert done == len(OTHERS)
    assert await pending(stub) == 1


async def test_the_user_of_a_damaged_decision_can_be_erased(served):
    server, stub, profiles = served
    ids = await decided(stub)
    damage_decision(server, BAD, ids[BAD])
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=BAD))
    from server.store.keys import decision_key
    assert server.store.get("decisions", decision_key(BAD, ids[BAD])) is None


async def test_a_repeat_whose_decision_is_damaged_is_refused_alone(served):
    """A ChooseVariant repeating a request whose logged decision no longer reads is answered
    suppressed `decision_record_damaged` (the first answer may have gone: not decided again);
    the calls sharing its commit as without it."""
    server, stub, _ = served
    await decided(stub)
    first = await stub.ChooseVariant(pb.ChooseVariantRequest(
        campaign_id="c1", user_id=BAD, request_id="r1"))
    damage_decision(server, BAD, first.decision_id)
    users = [*OTHERS[:5], BAD, *OTHERS[5:]]
    answers = await asyncio.gather(*(stub.ChooseVariant(pb.ChooseVariantRequest(
        campaign_id="c1", user_id=u, request_id="r1" if u == BAD else "")) for u in users))
    got = {u: (d.suppressed, d.reason) for u, d in zip(users, answers)}
    assert got == {**dict.fromkeys(OTHERS, (False, "")), BAD: (True, "decision_record_damaged")}


async def test_retention_drops_every_other_closed_decision_and_keeps_the_damaged_one(served,
                                                                                     caplog):
    """The retention pass read each record to know its status and age: a damaged one raised,
    ending the pass there at every run (the records after it, and the impressions, dead
    letters, audit files and replay tokens the pass drops after decisions, were kept)."""
    server, stub, _ = served
    ids = await decided(stub, window=0.3)
    deadline = time.time() + 5
    while await pending(stub) and time.time() < deadline:
        await asyncio.sleep(0.1)
    assert await pending(stub) == 0
    damage_decision(server, BAD, ids[BAD])
    dropped = await server.sweep_retention(now=time.time() + 3650 * 86400.0)
    assert dropped["decisions"] == len(OTHERS)
    from server.store.keys import decision_key
    assert server.store.get("decisions", decision_key(OTHERS[0], ids[OTHERS[0]])) is None
    with server.store.read() as txn:
        (kept,) = server.store.table("decisions").stored(txn, [decision_key(BAD, ids[BAD])])
    assert kept is not None  # as stored, for a restore to read
    assert any("1 decision record(s) damaged" in r.getMessage() and "retention" in r.getMessage()
               for r in caplog.records)


async def test_an_export_of_decisions_leaves_out_the_damaged_one(served, caplog):
    """ExportDecisions walked every record of the log, opening and decoding each before its
    filters: one damaged record failed every export, whatever its campaign, INTERNAL with no
    word of why."""
    server, stub, _ = served
    ids = await decided(stub)
    damage_decision(server, BAD, ids[BAD])
    got = [d.decision_id async for d in stub.ExportDecisions(pb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True))]
    assert sorted(got) == sorted(ids[u] for u in OTHERS)
    assert any("1 decision record(s) damaged" in r.getMessage() and "export" in r.getMessage()
               for r in caplog.records)


async def test_an_access_export_names_the_damaged_decision(settings, tmp_path):
    """ExportProfile read the user's decision records together: a damaged one failed it
    INTERNAL with no word of why (a damaged contact history is FAILED_PRECONDITION naming the
    damage and the repair: tests/server/test_damaged_contacts.py); nor may it leave one out."""
    from tests.conftest import minted
    path, tokens = minted(tmp_path, {"all": ["decider", "admin", "pii-reader"]})
    meta = (("authorization", f"Bearer {tokens['all']}"),)
    async with serving(settings.model_copy(update={"auth_config": path})) as (server, channel):
        stub, profiles = pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=pb.CampaignSpec(
            campaign_id="c1", channel="web", policy="bernoulli_ts",
            variants=[pb.Variant(id="a")], reward_window_seconds=3600)), metadata=meta)
        ids = [(await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="c1", user_id=BAD),
                                         metadata=meta)).decision_id for _ in range(3)]
        damage_decision(server, BAD, ids[1])
        with pytest.raises(grpc.RpcError) as err:
            await profiles.ExportProfile(ppb.ExportProfileRequest(user_id=BAD), metadata=meta)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert f"decision {ids[1]!r}: its record is damaged" in err.value.details()
    assert BAD not in err.value.details()
