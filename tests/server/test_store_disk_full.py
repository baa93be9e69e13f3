"""A store whose disk fills up: writes are refused as the store being full (RESOURCE_EXHAUSTED,
counted for the TailorStoreFull alert, saying what is wrong), reads go on, and writes work
again once space is freed, without a restart. A real server on a real small filesystem (a
tmpfs: needs root to mount, skipped otherwise)."""
import time
import uuid

import grpc
from prometheus_client import REGISTRY

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import serving


def _events(batch: int, user: str | None = None) -> ppb.TrackEventsRequest:
    now = time.time()
    return ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=f"{uuid.uuid4().hex}", user_id=user or f"u{batch}-{i % 10}", type="view",
        item_id=f"item{i}", timestamp=now - 30 + i * 1e-3,
        attributes={"pad": "p" * 900}) for i in range(50)])


async def test_a_full_disk_refuses_writes_as_store_full_and_recovers(small_disk, settings):
    settings.data_dir = small_disk / "data"
    settings.lmdb_sync = True
    settings.lmdb_map_size = 1 << 20
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"b" * (4 << 20))
    refused = lambda: REGISTRY.get_sample_value("tailor_store_full_refusals_total") or 0.0  # noqa: E731
    async with serving(settings) as (_, ch):
        profiles = ppb_grpc.ProfileServiceStub(ch)
        before = refused()
        for batch in range(500):  # ~50 KB a batch: the disk fills long before
            try:
                await profiles.TrackEvents(_events(batch))
            except grpc.aio.AioRpcError as err:
                failed = err
                break
        else:
            raise AssertionError("the disk never filled")
        assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failed
        assert "no space left" in failed.details(), failed.details()
        assert refused() == before + 1
        profile = await profiles.GetProfile(ppb.GetProfileRequest(user_id="u0-1"))  # reads go on
        assert profile.user_id == "u0-1"
        ballast.unlink()
        reply = await profiles.TrackEvents(_events(0, user="later"))
        assert reply.accepted == 50
