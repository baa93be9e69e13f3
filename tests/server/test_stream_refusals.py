"""A stream of requests refused before its client half-closed is read to its end (its messages
dropped, within `rpc.DRAIN_SECONDS` and `rpc.DRAIN_BYTES`) before the refusal is sent, so a
grpc.aio client gets the server's status: sent while the client still wrote, it raced those
writes, and grpc.aio then reported its own INTERNAL ("Internal error from Core",
grpc/grpc#36066) instead. Real server with an auth config, real grpc.aio client."""
import asyncio
import collections
import logging
import time
import tomllib

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from protos.tailor.v1 import attribution_pb2 as apb
from protos.tailor.v1 import attribution_pb2_grpc as apb_grpc
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import model_admin_pb2 as mpb
from protos.tailor.v1 import model_admin_pb2_grpc as mpb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from server import rpc
from server.security import tokens
from tests.conftest import minted, serving

C = grpc.StatusCode
UPLOAD_BYTES, BATCH_EVENTS = 1 << 20, 100
LATE = 0.3
"""Seconds between the message the server refuses and the client's last one."""
AIO_INTERNAL = "Internal error from Core"
"""grpc.aio's own INTERNAL for a status that came while it still wrote (grpc/grpc#36066)."""


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory):
    """(channel, tokens by role, the server, its auth config) of one server with an auth
    config, a 1 MiB upload limit and batches of at most 100 events; no bundle (nothing here
    needs one)."""
    from server.config import Settings
    from server.limits import Limits
    tmp = tmp_path_factory.mktemp("stream-refusals")
    auth, token_of = minted(tmp, {r: [r] for r in ("admin", "decider", "tracker", "analyst")})
    settings = Settings(port=0, data_dir=tmp / "data", secrets_dir=tmp / "secrets",
                        grace_seconds=1.0, lmdb_sync=False, auth_config=auth,
                        limits=Limits(bundle_upload_bytes=UPLOAD_BYTES,
                                      events_per_batch=BATCH_EVENTS))
    async with serving(settings) as (app, channel):
        yield channel, token_of, app, auth


def _track(n: int, user: str = "u1") -> ppb.TrackEventsRequest:
    now = time.time()
    return ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=f"{user}-{time.monotonic_ns()}-{i}", user_id=user, type="view",
        item_id=str(i), timestamp=now - i) for i in range(n)])


def _chunk(i: int, size: int = 256 << 10) -> mpb.BundleChunk:
    return mpb.BundleChunk(path="index.faiss", offset=i * size, data=b"\0" * size)


def _plan(campaign_id: str = "", users=("a",)) -> cpb.PlanCampaignRequest:
    return cpb.PlanCampaignRequest(campaign_id=campaign_id, user_ids=list(users))


def _attribute(model: int = 1) -> apb.AttributeRequest:
    return apb.AttributeRequest(spec=apb.ModelSpec(model=model),
                                paths=[apb.Path(path="a > b", conversions=1)])


def _call(channel, method: str, requests, token: str | None, timeout: float = 30):
    """The awaitable outcome of `method` over `requests` (a PlanCampaign's answers read)."""
    kw = dict(metadata=(("authorization", f"Bearer {token}"),) if token else (), timeout=timeout)
    if method == "PlanCampaign":
        async def answers():
            return [a async for a in cpb_grpc.CampaignServiceStub(channel).PlanCampaign(
                requests, **kw)]
        return answers()
    stub = {"TrackEventStream": ppb_grpc.ProfileServiceStub,
            "PushBundle": mpb_grpc.ModelAdminServiceStub,
            "AttributeStream": apb_grpc.AttributionServiceStub}[method](channel)
    return getattr(stub, method)(requests, **kw)


async def _refused(call, first, last) -> tuple[grpc.StatusCode, str, bool]:
    """(code, details, whether the server read the stream to its end) of a call whose messages
    are `first`, at once, then `last` `LATE` s later (never, for None), then the end. A write
    the server's status came before fails, and the client reads no further: its stream then
    never reaches the end."""
    ended, never = [False], asyncio.Event()

    async def requests():
        for message in first:
            yield message
        if last is None:
            await never.wait()
        await asyncio.sleep(LATE)
        yield last
        ended[0] = True
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(requests())
    return err.value.code(), err.value.details(), ended[0]


REFUSALS = {  # method, role, messages at once, the last one, expected code, in its details
    "bad message mid-stream": ("TrackEventStream", "tracker",
                               [_track(3), _track(BATCH_EVENTS + 1)], _track(3),
                               C.INVALID_ARGUMENT, f"at most {BATCH_EVENTS}"),
    "bad first message": ("AttributeStream", "analyst", [_attribute(99)], _attribute(),
                          C.INVALID_ARGUMENT, "spec.model"),
    "bad first message, bidirectional": ("PlanCampaign", "decider", [_plan()], _plan(),
                                         C.INVALID_ARGUMENT, "campaign_id"),
    "unknown campaign": ("PlanCampaign", "decider", [_plan("nope")], _plan(), C.NOT_FOUND,
                         "nope"),
    "past the upload limit": ("PushBundle", "admin", [_chunk(i) for i in range(5)], _chunk(5),
                              C.RESOURCE_EXHAUSTED, "upload limit"),
    "role lacking": ("TrackEventStream", "decider", [_track(3)], _track(3),
                     C.PERMISSION_DENIED, "lacks the role tracker"),
    "role lacking, bidirectional": ("PlanCampaign", "tracker", [_plan("c1")], _plan(),
                                    C.PERMISSION_DENIED, "lacks the role decider"),
    "role lacking, an upload": ("PushBundle", "decider", [_chunk(0)], _chunk(1),
                                C.PERMISSION_DENIED, "lacks the role admin"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_stream_is_read_to_its_end_before_its_status(server, case):
    """Failed before on every case: the status came at once, the client's last message was
    never written and its stream never ended."""
    channel, token_of, *_ = server
    method, role, first, last, code, named = REFUSALS[case]
    got, details, ended = await _refused(lambda r: _call(channel, method, r, token_of[role]),
                                         first, last)
    assert (got, ended) == (code, True), details
    assert named in details


async def test_a_stream_still_written_past_the_bound_is_refused_all_the_same(server):
    channel, token_of, *_ = server
    started = time.monotonic()
    code, details, ended = await _refused(
        lambda r: _call(channel, "PlanCampaign", r, token_of["decider"]), [_plan()], None)
    assert (code, ended) == (C.INVALID_ARGUMENT, False), details
    assert time.monotonic() - started < rpc.DRAIN_SECONDS + 5  # not at its 30 s deadline


@pytest.mark.parametrize("role", ["decider", None])
async def test_a_refused_stream_gets_its_status_within_its_deadline(server, role, monkeypatch):
    """A client whose deadline comes before `DRAIN_SECONDS` (or `STRANGER_WAIT_SECONDS`) are
    up, its stream refused while it writes nothing more (a bidirectional client waiting for
    the answer to its message), gets the server's status, not DEADLINE_EXCEEDED: the drain
    (the wait) takes at most `DEADLINE_SHARE` of the time left. Both bounds are raised here so
    the deadline leaves the status a second under load. Before, DEADLINE_EXCEEDED."""
    monkeypatch.setattr(rpc, "DRAIN_SECONDS", 4.0)
    monkeypatch.setattr(rpc, "STRANGER_WAIT_SECONDS", 4.0)
    channel, token_of, *_ = server
    started = time.monotonic()
    code, details, ended = await _refused(
        lambda r: _call(channel, "PlanCampaign", r, token_of.get(role), 2.0), [_plan()], None)
    assert (code, ended) == (C.INVALID_ARGUMENT if role else C.UNAUTHENTICATED, False), details
    assert time.monotonic() - started >= 2.0 * rpc.DEADLINE_SHARE * 0.9  # it did drain (wait)


def _received(method: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_msg_received_total", {
        "grpc_type": "client_stream", "grpc_service": "tailor.v1.ModelAdminService",
        "grpc_method": method}) or 0.0


async def test_a_refused_upload_is_read_at_most_drain_bytes_further(server):
    """An upload still written past its refusal is read until `DRAIN_BYTES` at most, not for
    the whole of `DRAIN_SECONDS` (test_bundle_bounds: an endless push stays bounded too).
    Its status then still races the upload's writes, and grpc.aio may report its own INTERNAL
    (grpc/grpc#36066) instead: accepted here, where what the server read is the point (only
    RESOURCE_EXHAUSTED accepted, this failed 3 of 5 runs of the file beside two busy cores)."""
    channel, token_of, *_ = server
    size, sent = 1 << 20, []

    async def endless():
        for i in range(256):  # a bound for the test only
            sent.append(i)
            yield _chunk(i, size)
    before = _received("PushBundle")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, "PushBundle", endless(), token_of["admin"])
    code, details = err.value.code(), err.value.details()
    assert code == C.RESOURCE_EXHAUSTED or (code, details) == (C.INTERNAL, AIO_INTERNAL), details
    # the chunk that passed the limit, and what was drained after it: past DRAIN_BYTES by one
    assert _received("PushBundle") - before <= UPLOAD_BYTES // size + 1 + rpc.DRAIN_BYTES // size + 1
    assert len(sent) < 64


async def test_a_refused_stream_of_empty_messages_is_read_at_most_drain_bytes_further(server):
    """Each dropped message counts `DRAIN_MESSAGE_BYTES` at least toward `DRAIN_BYTES`: counted
    by their bytes alone, an endless stream of empty messages was read for the whole of
    `DRAIN_SECONDS` (test_bundle_bounds' endless empty chunks: ~18,000 read after the refusal,
    in CI). The refusal here is the first message's, its role lacking."""
    channel, token_of, *_ = server
    most = rpc.DRAIN_BYTES // rpc.DRAIN_MESSAGE_BYTES
    sent = [0]

    async def endless():
        while sent[0] < 20 * most:  # a bound for the test only
            sent[0] += 1
            yield mpb.BundleChunk(path="index.faiss")
    before = _received("PushBundle")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(channel, "PushBundle", endless(), token_of["decider"])
    code, details = err.value.code(), err.value.details()
    assert code == C.PERMISSION_DENIED or (code, details) == (C.INTERNAL, AIO_INTERNAL), details
    assert _received("PushBundle") - before <= 1 + most + 1  # the refused one, the drained


async def test_a_strangers_stream_is_refused_unread(server):
    """Its caller unknown, a stream refused UNAUTHENTICATED is not read: each read lets gRPC
    take in a message of up to `grpc_max_message_bytes`. Its status waits
    `rpc.STRANGER_WAIT_SECONDS` instead (a client still writing past it may get grpc.aio's
    INTERNAL)."""
    channel, *_ = server
    code, details, ended = await _refused(lambda r: _call(channel, "PlanCampaign", r, None),
                                          [_plan("c1")], _plan())
    assert (code, ended) == (C.UNAUTHENTICATED, False), details


async def test_refused_streams_written_at_once_get_the_servers_status(server):
    """The common pattern, `stub.Method(iterator)` of a few messages, refused before the
    server read them (UNAUTHENTICATED, PERMISSION_DENIED) or at the first (NOT_FOUND): before,
    44 to 49 of 50 refused PERMISSION_DENIED got grpc.aio's INTERNAL instead (3 runs; none of
    the NOT_FOUND here, 18 of 200 of a server in another process); 14 to 21 of 40 refused
    UNAUTHENTICATED with `STRANGER_WAIT_SECONDS` at 0 (3 runs)."""
    channel, token_of, *_ = server
    got = []
    for i in range(120):
        role = (None, "tracker", "decider")[i % 3]  # UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(channel, "PlanCampaign", iter([_plan("nope", [f"u{j}" for j in range(50)])] * 4),
                        token_of.get(role))
        got.append(err.value.code())
    assert collections.Counter(got) == {C.UNAUTHENTICATED: 40, C.PERMISSION_DENIED: 40,
                                        C.NOT_FOUND: 40}, collections.Counter(c.name for c in got)


async def test_a_stream_whose_role_goes_while_it_waits_is_refused_unread(server, caplog):
    """A stream waiting for its next message when its caller's role is taken away (a reload)
    ends PERMISSION_DENIED at once, unread: its read was under way in a task now cancelled
    (`security.interceptor._Caller.checking`), and a second one would fail (asyncio: the
    reader is running still; gRPC Core: GRPC_CALL_ERROR_TOO_MANY_OPERATIONS)."""
    channel, _, app, auth = server
    token = tokens.mint(auth, "fading", ["tracker"])
    assert app.auth.reload_auth()
    never = asyncio.Event()

    async def silent():
        await never.wait()
        yield _track(1)
    call = _call(channel, "TrackEventStream", silent(), token)
    deadline = time.monotonic() + 10
    while not app.auth.interceptor.streams:  # the server waits for its first message
        assert time.monotonic() < deadline, "the stream never reached the server"
        await asyncio.sleep(0.02)
    doc = tomllib.loads(auth.read_text())
    doc["principals"]["fading"]["roles"] = ["analyst"]
    auth.write_text(tokens.dumps(doc))
    assert app.auth.reload_auth()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(call, 5)
    never.set()
    assert err.value.code() == C.PERMISSION_DENIED, err.value.details()
    assert "fading lacks the role tracker" in err.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-2000:]
