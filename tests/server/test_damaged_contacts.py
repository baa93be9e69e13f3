"""One damaged contact history (a record of the `contacts` table that does not open, sealed, or
does not decode) fails its own user only: a batch of other users' sends, decisions and
withdrawals goes on as if that user were absent, and no outbox entry is left to retry."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import minted, serving

DAY = 86400.0
BAD = "damaged-user"
OTHERS = [f"u{i:02d}" for i in range(50)]
DAMAGED = "contact_history_damaged"


@pytest.fixture(params=[True, False], ids=["sealed", "plain"])
def settings(tmp_path, request):
    """No bundle (campaigns do not use the recommender); encryption at rest on or off."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets", encrypt_at_rest=request.param)


@pytest.fixture
async def served(settings):
    async with serving(settings) as (server, channel):
        yield server, pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)


def damage(store, user_id: str) -> None:
    """Damage `user_id`'s stored contact history (`damage_record`)."""
    from server.store.keys import contact_key
    damage_record(store, "contacts", contact_key(user_id))


def damage_record(store, table: str, key: bytes, first: bool = True) -> None:
    """Flip the first and last bytes of the record at `key` of `table`, as a disk or a bad
    restore would, through the store's own transaction, below any sealing (the bytes as
    stored): a sealed record's tag no longer matches (its first byte, the version, is not
    checked), a plain one is no longer JSON or no longer of its packed layout. `first` False:
    the last byte only (a record sealed for its user outside the user tables, a dead letter or
    a send record, starts with the user's token: flipped, it reads as a shredded user's)."""
    from server.store.table import Table
    t = store.table(table)

    def fn(txn):
        (stored,) = Table.get_many(t, txn, [key])
        assert stored is not None and len(stored) > 1, "no record to damage"
        Table.put(t, txn, key, bytes([stored[0] ^ (0xA5 if first else 0)]) + stored[1:-1]
                  + bytes([stored[-1] ^ 0xA5]))
    store.write(fn)


def sent(user_id: str, n: int, at: float, decision_id: str = "") -> ppb.Event:
    return ppb.Event(event_id=f"sent-{user_id}-{n}", user_id=user_id, type="email_sent",
                     timestamp=at, attributes={"decision_id": decision_id} if decision_id else {})


async def track(profiles, events) -> None:
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=events))


async def with_damaged_history(server, profiles) -> float:
    """BAD with one counted send, then its history damaged; the time of that send."""
    now = time.time()
    await track(profiles, [sent(BAD, 0, now)])
    assert len(server.campaigns.repo.contacts_of(BAD)) == 1
    damage(server.store, BAD)
    return now


async def test_a_batch_of_sends_counts_every_other_users_contact_and_leaves_no_outbox_entry(
        served):
    server, _, profiles = served
    now = await with_damaged_history(server, profiles)
    await track(profiles, [sent(u, 1, now) for u in [*OTHERS[:25], BAD, *OTHERS[25:]]])
    for u in OTHERS:
        assert [c["channel"] for c in server.campaigns.repo.contacts_of(u)] == ["email"], u
    assert server.profiles.outbox.count() == 0


async def test_a_batch_of_sends_with_a_reward_counts_every_other_users_contact(served):
    """A batch holding a reward goes through the campaigns writer (its outbox entry), not the
    ingestion's transaction: the same for the sends there."""
    server, stub, profiles = served
    click = [pb.RewardRule(event_type="email_click", value=1)]
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(rewards=click)))
    await consent(profiles, OTHERS[0])
    d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="c1", user_id=OTHERS[0]))
    now = await with_damaged_history(server, profiles)
    click = ppb.Event(event_id="click", user_id=OTHERS[0], type="email_click", timestamp=now,
                      attributes={"decision_id": d.decision_id})
    await track(profiles, [click, *(sent(u, 1, now) for u in [BAD, *OTHERS[1:]])])
    await asyncio.sleep(0.3)  # the writer applies it after the answer
    for u in OTHERS[1:]:
        assert len(server.campaigns.repo.contacts_of(u)) == 1, u
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))
    assert sum(v.rewards for v in st.variants) == 1
    assert server.profiles.outbox.count() == 0


def spec(cid="c1", **kw) -> pb.CampaignSpec:
    caps = [pb.FrequencyCap(channel="email", max=3, window_seconds=DAY)]
    return pb.CampaignSpec(campaign_id=cid, channel="email", policy="bernoulli_ts",
                           variants=[pb.Variant(id="a"), pb.Variant(id="b")],
                           reward_window_seconds=3600, frequency_caps=caps, **kw)


async def consent(profiles, user_id: str) -> None:
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user_id, channel="email",
                                                    opted_in=True, source="test"))


async def audience_beside_damage(served) -> list[str]:
    """A capped campaign `c1`, every user opted in, BAD's history damaged: the users to decide,
    BAD among the others."""
    server, stub, profiles = served
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec()))
    for u in [BAD, *OTHERS]:
        await consent(profiles, u)
    await with_damaged_history(server, profiles)
    return [*OTHERS[:25], BAD, *OTHERS[25:]]


async def test_a_plan_refuses_the_damaged_user_alone(served):
    server, stub, _ = served
    users = await audience_beside_damage(served)
    planned = [d async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
        campaign_id="c1", user_ids=users)])) for d in a.decisions]
    got = {d.user_id: (d.suppressed, d.reason) for d in planned}
    assert got == {**dict.fromkeys(OTHERS, (False, "")), BAD: (True, DAMAGED)}
    for u in OTHERS:
        assert len(server.campaigns.repo.contacts_of(u)) == 1, u


async def test_concurrent_choices_refuse_the_damaged_user_alone(served):
    """ChooseVariant calls share the writer's transactions (group commit): the damaged user's
    is answered suppressed `contact_history_damaged`, the others as without it."""
    _, stub, _ = served
    users = await audience_beside_damage(served)
    answers = await asyncio.gather(*(stub.ChooseVariant(pb.ChooseVariantRequest(
        campaign_id="c1", user_id=u)) for u in users))
    got = {u: (d.suppressed, d.reason) for u, d in zip(users, answers)}
    assert got == {**dict.fromkeys(OTHERS, (False, "")), BAD: (True, DAMAGED)}


async def test_a_campaign_choosing_among_capped_channels_refuses_the_damaged_user_alone(served):
    """A campaign of several capped channels reads the histories before it decides (to choose
    a channel with room): the damaged one is not read as a history there either."""
    server, stub, profiles = served
    caps = [pb.FrequencyCap(channel="*", max=3, window_seconds=DAY)]
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=pb.CampaignSpec(
        campaign_id="multi", channels=["email", "push"], policy="bernoulli_ts",
        variants=[pb.Variant(id="a")], reward_window_seconds=3600, frequency_caps=caps)))
    await with_damaged_history(server, profiles)
    users = [BAD, *OTHERS[:10]]
    planned = [d async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
        campaign_id="multi", user_ids=users)])) for d in a.decisions]
    got = {d.user_id: (d.suppressed, d.reason) for d in planned}
    assert got == {**dict.fromkeys(OTHERS[:10], (False, "")), BAD: (True, DAMAGED)}
    one = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="multi", user_id=BAD))
    assert (one.suppressed, one.reason) == (True, DAMAGED)


async def test_a_damaged_history_is_logged_by_keyed_hash_and_counted(served, caplog):
    from prometheus_client import REGISTRY

    from server.security.userref import user_ref
    server, _, profiles = served
    now = await with_damaged_history(server, profiles)
    before = REGISTRY.get_sample_value("tailor_contact_histories_damaged_total",
                                       {"use": "send"}) or 0.0
    for n in (1, 2):  # a hot user: counted each time, said once a minute
        await track(profiles, [sent(u, n, now) for u in [BAD, OTHERS[0]]])
    assert REGISTRY.get_sample_value("tailor_contact_histories_damaged_total",
                                     {"use": "send"}) == before + 2
    lines = [r.getMessage() for r in caplog.records if "contact history" in r.getMessage()]
    assert len(lines) == 1 and user_ref(BAD) in lines[0] and BAD not in lines[0]


async def test_an_access_export_names_the_damage_and_an_erasure_repairs_it(settings, tmp_path):
    """Read alone (ExportProfile), the history fails its call FAILED_PRECONDITION, saying what
    is damaged and how to repair it; DeleteProfile removes it, and the user starts afresh."""
    path, tokens = minted(tmp_path, {"all": ["tracker", "decider", "admin", "pii-reader"]})
    meta = (("authorization", f"Bearer {tokens['all']}"),)
    async with serving(settings.model_copy(update={"auth_config": path})) as (server, channel):
        stub, profiles = pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)
        now = time.time()
        await profiles.TrackEvents(ppb.TrackEventsRequest(events=[sent(BAD, 0, now)]),
                                   metadata=meta)
        damage(server.store, BAD)
        with pytest.raises(grpc.RpcError) as err:
            await profiles.ExportProfile(ppb.ExportProfileRequest(user_id=BAD), metadata=meta)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "contact history" in err.value.details() and BAD not in err.value.details()
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=BAD), metadata=meta)
        await profiles.TrackEvents(ppb.TrackEventsRequest(events=[sent(BAD, 2, time.time())]),
                                   metadata=meta)  # (an event dated before the erasure: dropped)
        assert len(server.campaigns.repo.contacts_of(BAD)) == 1
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec()), metadata=meta)
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=BAD, channel="email",
                                                        opted_in=True, source="test"),
                                  metadata=meta)
        d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="c1", user_id=BAD),
                                     metadata=meta)
        assert (d.suppressed, d.reason) == (False, "")


@pytest.mark.parametrize("stored", [b'[[1.0,"email","d"]', b'[[1.0,"em\xffail","d"]]', b"\x00"])
def test_a_plain_history_that_does_not_decode_reads_as_damaged_beside_the_others(tmp_path,
                                                                               stored):
    from server.contact.caps import ContactLog
    from server.store import Store
    from server.store.keys import contact_key
    store = Store(tmp_path / "store", sync=False)
    log = ContactLog(store)
    store.write(lambda txn: store.table("contacts").put(txn, contact_key(BAD), stored))
    with store.read() as txn:
        got = log.histories(txn, [BAD, "other"])
    assert got[BAD] is None and got["other"].entries == []
    store.close()


def test_withdrawals_drop_every_other_users_contacts(sealed_store):
    from server.contact.caps import ContactLog
    log = ContactLog(sealed_store)
    now = time.time()
    sealed_store.write(lambda txn: log.add_sends(
        txn, [(u, "email", now, f"d-{u}") for u in (BAD, *OTHERS[:5])], now))
    damage(sealed_store, BAD)
    dropped = sealed_store.write(lambda txn: log.forget(
        txn, {u: {f"d-{u}"} for u in (*OTHERS[:3], BAD, *OTHERS[3:5])}, now))
    assert dropped == 5
    with sealed_store.read() as txn:
        assert [h.entries for h in log.histories(txn, OTHERS[:5]).values()] == [[]] * 5


async def test_a_decision_no_cap_checks_goes_on_uncounted_and_leaves_the_record_as_it_is(served):
    """Without a cap the history is not needed to decide: the decision is made; its contact
    is not counted, and the damaged record is not written over (a restore can still read it)."""
    server, stub, profiles = served
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=pb.CampaignSpec(
        campaign_id="free", channel="email", policy="bernoulli_ts", variants=[pb.Variant(id="a")],
        reward_window_seconds=3600)))
    await consent(profiles, BAD)
    await with_damaged_history(server, profiles)
    from server.contact.errors import ContactHistoryDamaged
    d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="free", user_id=BAD))
    assert (d.suppressed, d.variant_id) == (False, "a")
    with pytest.raises(ContactHistoryDamaged):
        server.campaigns.repo.contacts_of(BAD)
