"""Two `TailorServer`s in one process (an embedding program's), each on its own data dir with
its own keyrings: each keys its store with its own `store-id` key (`tokens.bound_context`).
The key was the process's: the second server's start re-keyed the first one's store, which
then answered NOT_FOUND for the users it held, wrote new ones under the other key (gone at
its next start), and looked its bundle's users up under it (cold starts); its audit lines named
their targets under the other's `user-id` key (`audit ref` found none of them)."""
import json

import grpc
import numpy as np

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.security.userref import target_refs
from tests.conftest import server_settings, serving


async def attributes(channel, user: str) -> dict | grpc.StatusCode:
    try:
        got = await pb_grpc.ProfileServiceStub(channel).GetProfile(pb.GetProfileRequest(user_id=user))
    except grpc.aio.AioRpcError as err:
        return err.code()
    return dict(got.attributes)


async def upsert(channel, user: str, tier: str) -> None:
    await pb_grpc.ProfileServiceStub(channel).UpsertAttributes(
        pb.UpsertAttributesRequest(user_id=user, attributes={"tier": tier}))


async def cold(channel, user: str) -> bool:
    got = await rpb_grpc.RecommendationServiceStub(channel).Recommend(
        rpb.RecommendRequest(user_id=user, k=5))
    return got.cold_start


async def test_two_servers_in_one_process_each_key_their_own_store(tmp_path, demo_bundle):
    known = str(np.load(demo_bundle / "users.npz")["user_ids"][0])  # a user the bundle knows
    a, b = server_settings(tmp_path / "a", demo_bundle), server_settings(tmp_path / "b", demo_bundle)
    async with serving(a) as (first, one):
        await upsert(one, "ann", "a")
        assert not await cold(one, known)
        async with serving(b) as (_, two):
            assert (a.secrets_dir / "store-id.keys").read_bytes() != \
                (b.secrets_dir / "store-id.keys").read_bytes()  # two keys
            await upsert(two, "bob", "b")
            assert await attributes(one, "ann") == {"tier": "a"}
            assert not await cold(one, known) and not await cold(two, known)
            await upsert(one, "carl", "a")
            assert await attributes(two, "bob") == {"tier": "b"}
            assert await attributes(two, "ann") == grpc.StatusCode.NOT_FOUND
            await pb_grpc.ProfileServiceStub(one).DeleteProfile(  # audited, by a keyed ref
                pb.DeleteProfileRequest(user_id="dora"))
            (line,) = [json.loads(x) for x in first.audit.tail(10)
                       if json.loads(x)["method"].endswith("DeleteProfile")]
            assert line["target"] == target_refs("dora", [first.secrets["user-id"].key])[0]
    async with serving(a) as (_, one):  # alone again: what it wrote meanwhile is its own
        assert [await attributes(one, u) for u in ("ann", "carl")] == [{"tier": "a"}] * 2
        assert await attributes(one, "bob") == grpc.StatusCode.NOT_FOUND
        assert not await cold(one, known)
    async with serving(b) as (_, two):
        assert await attributes(two, "bob") == {"tier": "b"}


async def test_two_servers_under_one_keyring_serve_each_its_own_users(tmp_path, demo_bundle):
    """Two data dirs under one secrets dir (one key, bound twice): each serves its own users."""
    a = server_settings(tmp_path / "a", demo_bundle)
    b = a.model_copy(update={"data_dir": tmp_path / "b" / "data"})
    async with serving(a) as (_, one), serving(b) as (_, two):
        await upsert(one, "ann", "a")
        await upsert(two, "bob", "b")
        assert await attributes(one, "ann") == {"tier": "a"}
        assert await attributes(two, "bob") == {"tier": "b"}
        assert await attributes(one, "bob") == grpc.StatusCode.NOT_FOUND
