"""The profiles one address is indexed for by UpsertAttributes are bounded
(`limits.address_profiles`): one more is refused with a status naming the limit, never a STOP
from the address. A real server."""
import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc
from server.store import keys
from tests.conftest import serving

from .test_address_backfill import consent
from .test_sms_inbound import reply

PHONE = "+447700900123"


@pytest.fixture
def bounded(settings):
    return settings.model_copy(update={"limits": settings.limits.model_copy(
        update={"address_profiles": 3})})


async def holds(profiles, user: str, phone: str = PHONE) -> None:
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"phone": phone, "first_name": "Ann"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms", opted_in=True,
                                                    source="signup"))


async def test_one_profile_more_than_the_limit_at_an_address_is_refused_not_the_stop(bounded):
    """Every profile set at one number was indexed, without bound: at 100,000 a STOP held
    its webhook call for 62 s and the index entry held 20 MB, read whole. The fourth profile
    at the number (limit 3) is RESOURCE_EXHAUSTED naming the limit, nothing of its call
    stored; the three indexed ones keep setting it, and a STOP reaches every one."""
    async with serving(bounded) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        for user in ("a", "b", "c"):
            await holds(profiles, user)
        with pytest.raises(grpc.RpcError) as err:
            await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id="d", attributes={"phone": "0044 7700 900123", "first_name": "Dan"}))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limits.address_profiles" in err.value.details()
        assert "7700" not in err.value.details()  # the address is not echoed
        with pytest.raises(grpc.RpcError) as err:  # nothing of the refused call was stored
            await profiles.GetProfile(ppb.GetProfileRequest(user_id="d"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        await holds(profiles, "c")  # indexed already: set again, never refused
        await holds(profiles, "d", "+447700900999")  # another number: room
        assert server.phones.lookup(PHONE) == ["a", "b", "c"]
        assert await reply(bounded, PHONE, "STOP") == 200
        assert [await consent(profiles, u, "sms") for u in "abcd"] == [False, False, False, True]
        await holds(profiles, "c", "+447700900999")  # c moves: its room at the first is free
        await holds(profiles, "d", PHONE)
        assert server.phones.lookup(PHONE) == ["a", "b", "d"]


async def test_a_stop_from_a_number_many_profiles_share_is_a_few_write_transactions(settings):
    """A STOP wrote each profile's two consent changes (marketing, transactional) in a write
    transaction of its own: at the bound, 1,000 profiles, 2,000 fsync'd writes held the
    provider's call 7.2 s. The profiles are written `stops.CHUNK` a transaction per purpose."""
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        users = [f"p{i:02d}" for i in range(12)]
        for user in users:
            await holds(profiles, user)
        writes, write = [], server.store.write

        def counted(fn, *args, **kw):  # the real write, counted
            writes.append(fn)
            return write(fn, *args, **kw)
        server.store.write = counted
        try:
            assert await reply(settings, PHONE, "STOP") == 200
        finally:
            del server.store.write
        assert [await consent(profiles, u, "sms") for u in users] == [False] * 12
        got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="p00"))
        assert got.consent["sms"].source == "sms reply STOP"
        assert len(writes) == 2  # marketing, transactional: 12 profiles each


async def test_a_profile_indexed_by_an_entry_from_before_shared_ones_sets_its_number_again(
        bounded):
    """A profile indexed at the number by the one-user entry written before entries per
    profile (`keys.phone_key` alone, still read: `lookup` names it) was taken for a new one
    when it set the number again at the limit, and refused RESOURCE_EXHAUSTED; indexed there
    already, it is never refused."""
    async with serving(bounded) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="old", attributes={"first_name": "Ole"}))
        digest, meta = server.phones._digests(PHONE)[0], server.store.raw_table("meta")

        def texted_before(txn):  # as a Tailor of before indexed the number texted
            key = keys.phone_key(digest)
            meta.put(txn, key, server.store.seal_for_user(txn, "old", key, b"old"))
            meta.put(txn, keys.phone_user_key("old"), digest.encode())
        server.store.write(texted_before)
        for user in ("a", "b", "c"):
            await holds(profiles, user)
        assert server.phones.lookup(PHONE) == ["a", "b", "c", "old"]
        await holds(profiles, "old")
        assert server.phones.lookup(PHONE) == ["a", "b", "c", "old"]
        with pytest.raises(grpc.RpcError) as err:  # a new one still is
            await holds(profiles, "d")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_damaged_entry_from_before_shared_ones_names_nobody_the_bound_counts(bounded):
    """A damaged one-user entry at the number (written before entries per profile; it reaches
    nobody) was read as naming every profile that set the number: the bound was never checked
    there (a fourth profile at the limit 3 was indexed) and each of their calls counted
    `use=erase`, an erasure's deletion, though nothing was deleted. It names nobody: the
    fourth is refused; DeleteProfile of a profile at the number deletes it (counted once)."""
    from prometheus_client import REGISTRY

    from tests.server.test_damaged_contacts import damage_record
    async with serving(bounded) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        key = keys.phone_key(server.phones._digests(PHONE)[0])

        def texted_before(txn):  # as a Tailor of before indexed the number texted
            server.store.raw_table("meta").put(txn, key, server.store.seal_for_user(
                txn, "old", key, b"old"))
        server.store.write(texted_before)
        damage_record(server.store, "meta", key, first=False)
        labels = {"record": "address_entry", "use": "erase"}
        before = REGISTRY.get_sample_value("tailor_records_damaged_total", labels) or 0.0
        for user in ("a", "b", "c"):
            await holds(profiles, user)
        with pytest.raises(grpc.RpcError) as err:
            await holds(profiles, "d")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert server.phones.lookup(PHONE) == ["a", "b", "c"]
        assert REGISTRY.get_sample_value("tailor_records_damaged_total", labels) == before
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="a"))
        with server.store.read() as txn:
            assert server.store.raw_table("meta").get(txn, key) is None
        assert REGISTRY.get_sample_value("tailor_records_damaged_total", labels) == before + 1
