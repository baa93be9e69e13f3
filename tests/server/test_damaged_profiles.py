"""One damaged profile record (the feature state and seen-set, or the attributes and consent: a
record of the `profiles` table that does not open, sealed, or does not decode, plain) fails its
own user only: the other users of a batch of events, decisions or recommendations are served as
if that user were absent; the user's own reads name the damage; their erasure repairs it."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from tests.conftest import minted, server_settings, serving
from tests.server.test_damaged_contacts import damage_record

BAD = "damaged-user"
OTHERS = [f"u{i:02d}" for i in range(50)]
USERS = [*OTHERS[:25], BAD, *OTHERS[25:]]
DAMAGED = "profile_damaged"
RECORDS = {"state": "feature state and seen-set", "meta": "attributes and consent"}


@pytest.fixture(params=[True, False], ids=["sealed", "plain"])
def sealed(request):
    return request.param


@pytest.fixture(params=["state", "meta"])
def record(request):
    return request.param


@pytest.fixture
def settings(tmp_path, sealed):
    """No bundle (events, decisions, reads); encryption at rest on or off."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets", encrypt_at_rest=sealed)


def damage(store, user_id: str, record: str) -> bytes:
    """Damage `user_id`'s `record` ("state", "meta") as a disk would (`damage_record`); the
    bytes as now stored."""
    from server.store.keys import feature_key, profile_meta_key
    key = (feature_key if record == "state" else profile_meta_key)(user_id)
    damage_record(store, "profiles", key)
    return stored(store, key)


def stored(store, key: bytes) -> bytes:
    from server.store.table import Table
    with store.read() as txn:
        return Table.get_many(store.table("profiles"), txn, [key])[0]


def view(user_id: str, n: int, item: str = "i1") -> ppb.Event:
    return ppb.Event(event_id=f"view-{user_id}-{n}", user_id=user_id, type="view",
                     item_id=item, timestamp=time.time())


async def with_profiles(server, profiles, record: str, item: str = "i1") -> bytes:
    """Every user of `USERS` with consent and a view; BAD's `record` damaged (its bytes)."""
    for u in USERS:
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="email",
                                                        opted_in=True, source="test"))
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[view(u, 0, item) for u in USERS]))
    return damage(server.store, BAD, record)


async def test_a_batch_of_events_rejects_the_damaged_users_alone(settings, record):
    """The damaged user's events are rejected `profile_damaged` (storing them would write a new
    state over the user's history), every other user's stored; the record is left as it is."""
    from server.store.keys import feature_key, profile_meta_key
    async with serving(settings) as (server, channel):
        profiles = ppb_grpc.ProfileServiceStub(channel)
        damaged = await with_profiles(server, profiles, record)
        got = await profiles.TrackEvents(ppb.TrackEventsRequest(
            events=[view(u, 1) for u in USERS]))
        streamed = await profiles.TrackEventStream(iter([ppb.TrackEventsRequest(
            events=[view(u, n) for u in USERS]) for n in (2, 3)]))
        assert (got.accepted, streamed.accepted) == (50, 100)
        assert [(r.index, r.event_id) for r in got.rejected] == [(25, f"view-{BAD}-1")]
        assert [(r.index, r.event_id) for r in streamed.rejected] == [
            (25, f"view-{BAD}-2"), (76, f"view-{BAD}-3")]
        assert all(r.reason.startswith(DAMAGED) and BAD not in r.reason
                   for r in [*got.rejected, *streamed.rejected])
        for u in OTHERS:
            assert len((await profiles.GetProfile(ppb.GetProfileRequest(user_id=u))).events) == 4
        key = (feature_key if record == "state" else profile_meta_key)(BAD)
        assert stored(server.store, key) == damaged


async def test_a_resent_event_of_the_damaged_user_stays_a_duplicate(settings, record):
    """A client re-sending a batch whose events were accepted (a lost reply) is told they are
    duplicates, the damaged user's too: they are stored. Only that user's new events are
    rejected (their re-sent ones were rejected `profile_damaged` with the new ones)."""
    async with serving(settings) as (server, channel):
        profiles = ppb_grpc.ProfileServiceStub(channel)
        await with_profiles(server, profiles, record)
        got = await profiles.TrackEvents(ppb.TrackEventsRequest(
            events=[view(BAD, 0), view(BAD, 1), view(OTHERS[0], 0), view(OTHERS[0], 1)]))
        assert (got.accepted, got.duplicates) == (1, 2)
        assert [(r.index, r.event_id) for r in got.rejected] == [(1, f"view-{BAD}-1")]


async def test_decisions_suppress_the_damaged_user_alone(settings):
    """ChooseVariant calls (sharing the writer's commits) and a PlanCampaign stream: the user
    whose consent cannot be read is suppressed `profile_damaged`, the others decided."""
    async with serving(settings) as (server, channel):
        stub, profiles = pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=pb.CampaignSpec(
            campaign_id="c1", channel="email", policy="bernoulli_ts",
            variants=[pb.Variant(id="a"), pb.Variant(id="b")], reward_window_seconds=3600)))
        await with_profiles(server, profiles, "meta")
        answers = await asyncio.gather(*(stub.ChooseVariant(pb.ChooseVariantRequest(
            campaign_id="c1", user_id=u)) for u in USERS))
        expected = {**dict.fromkeys(OTHERS, (False, "")), BAD: (True, DAMAGED)}
        assert {u: (d.suppressed, d.reason) for u, d in zip(USERS, answers)} == expected
        planned = [d async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
            campaign_id="c1", user_ids=USERS)])) for d in a.decisions]
        assert {d.user_id: (d.suppressed, d.reason) for d in planned} == expected


async def test_recommendations_serve_everyone_beside_a_damaged_state(tmp_path, demo_bundle,
                                                                    sealed):
    """Recommend and RecommendBatch (whole, not partial) read the users' states and seen-sets
    together: the damaged user is served as one without live events, the others as before."""
    settings = server_settings(tmp_path, demo_bundle).model_copy(
        update={"encrypt_at_rest": sealed})
    async with serving(settings) as (server, channel):
        profiles, rec = ppb_grpc.ProfileServiceStub(channel), rpb_grpc.RecommendationServiceStub(
            channel)
        item = str(server.registry.current().items["item_ids"][0])
        await with_profiles(server, profiles, "state", item)
        one = await rec.Recommend(rpb.RecommendRequest(user_id=BAD, k=5))
        batch = await rec.RecommendBatch(rpb.RecommendBatchRequest(
            requests=[rpb.RecommendRequest(user_id=u, k=5) for u in USERS[20:30]]))
        assert len(one.items) == 5
        assert [len(r.items) for r in batch.responses] == [5] * 10
        assert item not in [i.item_id for i in batch.responses[0].items]  # (its seen-set read)


async def test_a_profile_read_names_the_damage_and_an_erasure_repairs_it(settings, record,
                                                                        tmp_path):
    path, tokens = minted(tmp_path, {"all": ["tracker", "admin", "pii-reader", "analyst"]})
    meta = (("authorization", f"Bearer {tokens['all']}"),)
    async with serving(settings.model_copy(update={"auth_config": path})) as (server, channel):
        profiles = ppb_grpc.ProfileServiceStub(channel)
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=BAD, attributes={"email": "bad@example.com"}), metadata=meta)
        await profiles.TrackEvents(ppb.TrackEventsRequest(events=[view(BAD, 0)]), metadata=meta)
        damage(server.store, BAD, record)
        for call in (profiles.GetProfile(ppb.GetProfileRequest(user_id=BAD), metadata=meta),
                     profiles.ExportProfile(ppb.ExportProfileRequest(user_id=BAD),
                                            metadata=meta)):
            with pytest.raises(grpc.RpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert RECORDS[record] in err.value.details() and BAD not in err.value.details()
        if record == "meta":  # (a change of it reads it first: not written over)
            with pytest.raises(grpc.RpcError) as err:
                await profiles.SetConsent(ppb.SetConsentRequest(
                    user_id=BAD, channel="email", opted_in=True, source="test"), metadata=meta)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        rejected = view(BAD, 1)
        refused = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[rejected]),
                                             metadata=meta)
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=BAD), metadata=meta)
        again = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[rejected]),
                                           metadata=meta)  # (dated before the erasure)
        assert again.rejected[0].reason.startswith("the user was erased after")
        assert "dated before the erasure" in refused.rejected[0].reason  # (as it says)
        got = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[view(BAD, 2)]),
                                         metadata=meta)
        assert (got.accepted, list(got.rejected)) == (1, [])
        after = await profiles.GetProfile(ppb.GetProfileRequest(user_id=BAD), metadata=meta)
        assert len(after.events) == 1


async def test_a_damaged_profile_is_logged_by_keyed_hash_and_counted(settings, record, caplog):
    """Each read is counted; the WARNING is said once a minute at most per user, record and
    use (a hot user's record is read at each of their calls: a line per call before)."""
    from prometheus_client import REGISTRY

    from server.security.userref import user_ref
    labels = {"record": record, "use": "event"}
    async with serving(settings) as (server, channel):
        profiles = ppb_grpc.ProfileServiceStub(channel)
        await with_profiles(server, profiles, record)
        before = REGISTRY.get_sample_value("tailor_profile_records_damaged_total", labels)
        for n in (1, 2):
            await profiles.TrackEvents(ppb.TrackEventsRequest(events=[view(u, n) for u in USERS]))
    assert REGISTRY.get_sample_value("tailor_profile_records_damaged_total",
                                     labels) == before + 2
    lines = [r.getMessage() for r in caplog.records if "profile record" in r.getMessage()]
    assert len(lines) == 1 and user_ref(BAD) in lines[0] and BAD not in lines[0]


async def test_a_server_starts_beside_a_damaged_state_and_its_prior_leaves_it_out(settings):
    """The contact policy's population prior samples every stored state at start (and when
    stale): the damaged one is left out of it, counted; the others are sampled."""
    from prometheus_client import REGISTRY
    labels = {"record": "state", "use": "prior"}
    async with serving(settings) as (server, channel):
        profiles = ppb_grpc.ProfileServiceStub(channel)
        await profiles.TrackEvents(ppb.TrackEventsRequest(events=[view(u, 0) for u in USERS]))
        damage(server.store, BAD, "state")
    before = REGISTRY.get_sample_value("tailor_profile_records_damaged_total", labels)
    async with serving(settings) as (server, channel):
        states, after = server.profiles.sample_states(100)
    assert (len(states), after) == (50, b"")
    assert REGISTRY.get_sample_value("tailor_profile_records_damaged_total",
                                     labels) == before + 2  # (at start, and here)


@pytest.fixture
def store(tmp_path, sealed):
    from server.store import Store
    from tests.conftest import throwaway_crypto
    store = Store(tmp_path / "store", sync=False, crypto=throwaway_crypto() if sealed else None)
    yield store
    store.close()


def with_addresses(store, users) -> object:
    """A repository of `store` whose `users` hold an email attribute."""
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    repo = ProfileRepository(store, ProfileSchema().layout())
    for u in users:
        repo.update_meta(u, lambda m, u=u: m["attributes"].update(email=f"{u}@example.com"))
    return repo


def test_a_change_of_several_users_meta_records_leaves_the_damaged_one_as_it_is(store):
    """A consent change of the profiles holding one address (a STOP, a one-click opt-out)
    changes the others; the damaged record is skipped, not written over."""
    from server.store.keys import profile_meta_key
    users = [OTHERS[0], BAD, OTHERS[1]]
    repo = with_addresses(store, users)
    damaged = damage(store, BAD, "meta")
    changed = repo.update_metas(users, lambda m: m["consent"].update(email={"opted_in": False}))
    assert changed == [OTHERS[0], OTHERS[1]]
    assert [m["consent"] for m in repo.metas([OTHERS[0], OTHERS[1]])] == \
        [{"email": {"opted_in": False}}] * 2
    assert stored(store, profile_meta_key(BAD)) == damaged


def test_a_change_of_existing_profiles_only_leaves_the_damaged_one_as_it_is(store):
    """The same change made to existing profiles only (`existing`: an SMS STOP, which never
    brings an erased user back), which asks whether each has a profile: the damaged record is
    one (sealed, asking opened it: InvalidTag for the whole change)."""
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store.keys import profile_meta_key
    users = [OTHERS[0], BAD, OTHERS[1]]
    with_addresses(store, users)
    repo = ProfileRepository(store, ProfileSchema().layout(),
                             Tombstones(store, Keyring.generate("erasure")).judged)
    damaged = damage(store, BAD, "meta")
    changed = repo.update_metas(users, lambda m: m["consent"].update(email={"opted_in": False}),
                                existing=True)
    assert changed == [OTHERS[0], OTHERS[1]]
    assert stored(store, profile_meta_key(BAD)) == damaged


def test_the_attribute_backfill_walks_past_a_damaged_meta_record(store):
    """The walk that tells the address index of profiles stored before it (at the first start
    after an upgrade) tells it of every other profile."""
    from server.profiles.backfill import backfill_attributes

    class Told:
        def __init__(self):
            self.emails = []

        def on_stored(self, txn, token, user_id, attributes):
            self.emails.append(attributes["email"])
            return 0

    with_addresses(store, [OTHERS[0], BAD, OTHERS[1]])
    damage(store, BAD, "meta")
    told = Told()
    backfill_attributes(store, [told])
    assert sorted(told.emails) == [f"{u}@example.com" for u in OTHERS[:2]]


async def test_a_campaign_reading_states_suppresses_the_user_whose_state_is_damaged(settings):
    """A campaign choosing among channels reads the feature states (send time, channel): the
    damaged one's user is suppressed, the others decided."""
    async with serving(settings) as (server, channel):
        stub, profiles = pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=pb.CampaignSpec(
            campaign_id="multi", channels=["email", "push"], policy="bernoulli_ts",
            variants=[pb.Variant(id="a")], reward_window_seconds=3600)))
        await with_profiles(server, profiles, "state")
        planned = [d async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
            campaign_id="multi", user_ids=USERS)])) for d in a.decisions]
        assert {d.user_id: d.reason for d in planned if d.suppressed} == {BAD: DAMAGED}
        assert len(planned) == 51
