"""Requests have their own transport bound (`grpc_max_request_bytes`, 24 MiB), below the
replies' (`grpc_max_message_bytes`, 64 MiB), against a real `python -m server`.

gRPC parses a request whole on the worker's event loop before any handler's limit: at the
replies' 64 MiB, one TrackEvents of empty events held the loop 12.8 s. A request over the bound
is now refused RESOURCE_EXHAUSTED unparsed, and the largest ones the limits admit still pass."""
import time

import grpc
import pytest

from clients import TailorClient
from clients.client import CHUNK_BYTES, TailorError
from protos.tailor.v1 import campaign_pb2 as campaign_pb
from protos.tailor.v1 import campaign_pb2_grpc as campaign_grpc
from protos.tailor.v1 import diagnostics_pb2, diagnostics_pb2_grpc
from protos.tailor.v1 import model_admin_pb2 as admin_pb
from protos.tailor.v1 import model_admin_pb2_grpc as admin_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rec_pb
from protos.tailor.v1 import recommendation_pb2_grpc as rec_grpc
from server.config import Settings
from server.limits import DEFAULT_LIMITS as LIMITS
from server.limits import Limits
from tests.conftest import loop_gaps, serving

BOUND = Settings().grpc_max_request_bytes


@pytest.fixture(scope="module")
def served(module_server_process, tmp_path_factory):
    return module_server_process(tmp_path_factory.mktemp("bound") / "data")


@pytest.fixture
def channel(served):
    with grpc.insecure_channel(served.target, options=[("grpc.max_send_message_length", -1)]) as ch:
        yield ch


def _largest_event(i: int, now: float) -> pb.Event:
    """An event with every id, its attributes and its request id at their bounds."""
    def an_id(tag: str) -> str:
        return f"{tag}{i}-".ljust(LIMITS.id_bytes, "x")
    each = LIMITS.event_attribute_bytes // LIMITS.event_attributes
    return pb.Event(event_id=an_id("e"), user_id=an_id("u"), type="email_complaint",
                    channel="email", campaign_id=an_id("c"), item_id=an_id("i"),
                    value=LIMITS.event_value_max, timestamp=now - i * 1e-3,
                    attributes={f"{k:02d}": "v" * (each - 2) for k in range(LIMITS.event_attributes)},
                    request_id="r" * 64 + f".{LIMITS.batch_users - 1}", position=LIMITS.recommend_k)


def test_a_request_over_the_bound_is_refused_resource_exhausted_and_the_server_serves_on(served):
    over = [{"event_id": "e", "user_id": "u", "type": "view", "item_id": "i",
             "timestamp": time.time(), "attributes": {"a": "x" * BOUND}}]
    with TailorClient(served.target, timeout=60) as client:
        with pytest.raises(TailorError) as err:
            client.track_batch(over)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
        assert f"vs. {BOUND})" in str(err.value) and "grpc_max_request_bytes" in str(err.value)
        assert client.track_batch([{**over[0], "attributes": {}}]).accepted == 1  # serves on


def test_a_stream_message_over_the_bound_is_refused_resource_exhausted(channel):
    over = pb.TrackEventsRequest(events=[pb.Event(event_id="e", attributes={"a": "x" * BOUND})])
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.ProfileServiceStub(channel).TrackEventStream(iter([over]), timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
    assert f"vs. {BOUND})" in err.value.details()


def test_the_largest_track_events_the_limits_admit_passes(channel):
    now = time.time()
    request = pb.TrackEventsRequest(events=[_largest_event(i, now)
                                            for i in range(LIMITS.events_per_batch)])
    assert 17 << 20 < request.ByteSize() < BOUND
    reply = pb_grpc.ProfileServiceStub(channel).TrackEvents(request, timeout=120)
    assert reply.accepted == LIMITS.events_per_batch, reply.rejected[:3]
    diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping(diagnostics_pb2.PingRequest(),
                                                              timeout=10)


def test_a_clients_push_bundle_chunk_passes_the_transport(channel):
    """A chunk as the clients send them (1 MiB of data, a long path) is read by the handler,
    which refuses the bundle it starts for its own reason (no manifest), not the transport."""
    chunk = admin_pb.BundleChunk(path="p" * LIMITS.bundle_path_chars, data=b"\0" * CHUNK_BYTES)
    with pytest.raises(grpc.RpcError) as err:
        admin_grpc.ModelAdminServiceStub(channel).PushBundle(iter([chunk]), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert "manifest.json: missing" in err.value.details()


def test_a_limit_on_request_bytes_over_the_transport_bound_is_refused_at_start():
    with pytest.raises(ValueError, match="(?s)grpc_max_request_bytes.*limits.batch_request_bytes"):
        Settings(limits=Limits(batch_request_bytes=BOUND + 1))
    with pytest.raises(ValueError, match="or lower limits.batch_request_bytes "
                                         r"\(TAILOR_LIMITS__BATCH_REQUEST_BYTES\) with it"):
        Settings(grpc_max_request_bytes=2 << 20)  # the lowest it takes: the limit must follow
    assert Settings(limits=Limits(batch_request_bytes=BOUND + 1),
                    grpc_max_request_bytes=BOUND + 1).grpc_max_request_bytes == BOUND + 1


MANY = 2 << 20
"""Entries of the lists below: 4 MiB of empty messages, within every byte bound."""


def _too_many_entries() -> list:
    """(stub, method, request, field, entries): a list of more entries than its limit. Counted
    after they were converted, RecommendBatch's held the server's event loop 13 s in process,
    CreateCampaign's variants 5 s (out of process; its rewards and frequency caps 2.4 s): the
    parse of each takes about 0.1 s."""
    spec = campaign_pb.CampaignSpec(variants=[campaign_pb.Variant()] * (MANY // 2))
    return [(rec_grpc.RecommendationServiceStub, "RecommendBatch",
             rec_pb.RecommendBatchRequest(requests=[rec_pb.RecommendRequest()] * MANY),
             "requests", MANY),
            (campaign_grpc.CampaignServiceStub, "CreateCampaign",
             campaign_pb.CreateCampaignRequest(spec=spec), "variants", MANY // 2),
            (campaign_grpc.CampaignServiceStub, "UpdateCampaign",
             campaign_pb.UpdateCampaignRequest(spec=spec), "variants", MANY // 2),
            (campaign_grpc.CampaignServiceStub, "CreateCampaign", campaign_pb.CreateCampaignRequest(
                spec=campaign_pb.CampaignSpec(rewards=[campaign_pb.RewardRule()] * MANY)),
             "rewards", MANY),
            (campaign_grpc.CampaignServiceStub, "CreateCampaign", campaign_pb.CreateCampaignRequest(
                spec=campaign_pb.CampaignSpec(frequency_caps=[campaign_pb.FrequencyCap()] * MANY)),
             "frequency_caps", MANY)]


@pytest.mark.parametrize("case", _too_many_entries(), ids=lambda case: f"{case[1]}-{case[3]}")
async def test_a_list_past_its_limit_is_refused_before_it_is_converted(tmp_path, case):
    stub, method, request, field, entries = case
    settings = Settings(port=0, data_dir=tmp_path / "data", secrets_dir=tmp_path / "secrets",
                        grace_seconds=1.0, lmdb_sync=False)
    async with serving(settings) as (_, ch), loop_gaps(0.01) as gaps:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(stub(ch), method)(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}: {entries} entries, at most" in err.value.details()
    assert max(gaps) < 2.0, f"the loop stood still {max(gaps):.2f} s"


@pytest.mark.parametrize("said, setting", [
    (f"SERVER: Received message larger than max (25165825 vs. {BOUND})", "grpc_max_request_bytes"),
    ("SERVER: Sent message larger than max (67108865 vs. 67108864)", "grpc_max_message_bytes"),
    ("CLIENT: Sent message larger than max (67108865 vs. 67108864)", "max_message_bytes")])
def test_a_clients_error_names_the_bound_of_grpcs_own_size_refusal(said, setting):
    """gRPC's own refusals name sizes only; the clients' TailorError adds which setting."""
    err = TailorError(grpc.StatusCode.RESOURCE_EXHAUSTED, said)
    assert str(err).startswith(f"RESOURCE_EXHAUSTED: {said} (") and setting in str(err)


def test_a_clients_attribution_stream_keeps_each_message_under_a_low_bound(module_server_process,
                                                                             tmp_path):
    """`TailorClient.attribute` sent 10,000 paths a message whatever their size: long paths
    within `attribution_touches` made a message over the server's request bound, refused
    RESOURCE_EXHAUSTED (at the 24 MiB default: 10,000 paths of 210 touches, 2.1 million of
    its 5 million). It now also starts a message at `CHUNK_BYTES`, as PushBundle does, under
    the lowest bound a server takes (2 MiB)."""
    low = 2 << 20
    served = module_server_process(tmp_path / "data", env={
        "TAILOR_GRPC_MAX_REQUEST_BYTES": str(low), "TAILOR_LIMITS__BATCH_REQUEST_BYTES": str(low)})
    channels = [f"channel_{c:02d}" for c in range(10)]
    paths = [{"path": [channels[(i + t) % 10] for t in range(100)], "conversions": 1}
             for i in range(3000)]  # 300,000 touches, 3.6 MB as one message
    with TailorClient(served.target, timeout=120) as client:
        got = client.attribute(paths, "linear")
    assert got.paths == len(paths) and got.total_conversions == pytest.approx(len(paths))
    assert sum(c.conversions for c in got.credits) == pytest.approx(len(paths))
