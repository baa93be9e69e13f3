"""Request ids (idempotency keys) of ChooseVariant: a repeat of an id (a client's retry of a
call whose answer was lost) is answered the decision logged for it, across worker processes,
and counts once toward the frequency caps; another id is a new decision (`campaigns.requests`)."""
import asyncio
import contextlib
import json
import threading

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from tests.server.test_campaigns import code_of


def _spec(cid: str) -> pb.CampaignSpec:
    return pb.CampaignSpec(campaign_id=cid, policy="bernoulli_ts", channel="push",
                           reward_window_seconds=3600,
                           variants=[pb.Variant(id=f"v{i}") for i in range(3)],
                           frequency_caps=[pb.FrequencyCap(channel="push", max=2,
                                                           window_seconds=3600)])


def _request(user: str, request_id: str) -> pb.ChooseVariantRequest:
    return pb.ChooseVariantRequest(campaign_id="c1", user_id=user, request_id=request_id)


def _export(stub) -> list[pb.DecisionRecord]:
    return list(stub.ExportDecisions(pb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True, include_suppressed=True), timeout=30))


def test_a_repeated_request_id_is_one_decision_across_two_workers(server_process, tmp_path):
    server = server_process(tmp_path / "data", workers=2, env={"TAILOR_LMDB_SYNC": "false"})
    with grpc.insecure_channel(server.target) as ch:
        pb_grpc.CampaignServiceStub(ch).CreateCampaign(
            pb.CreateCampaignRequest(spec=_spec("c1")), timeout=30)
    answers, start = [], threading.Barrier(12)

    def send(i: int) -> None:
        # a channel (connection) of its own: the kernel spreads connections over the workers
        with grpc.insecure_channel(server.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = pb_grpc.CampaignServiceStub(ch)
            stub.ChooseVariant(_request(f"warm{i}", "w"), timeout=30)  # connected
            start.wait(timeout=30)
            answers.extend(stub.ChooseVariant(_request("ann", "r-1"), timeout=30)
                           for _ in range(3))
    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert len(answers) == 36
    first = answers[0]
    assert not first.suppressed and first.variant_id and first.channel == "push"
    assert all(a == first for a in answers)  # the same decision, field for field
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.CampaignServiceStub(ch)
        logged = [r for r in _export(stub) if r.user_id == "ann"]
        assert [(r.decision_id, r.status) for r in logged] == [(first.decision_id, "pending")]
        # the cap (2 a window) counted the 36 answers once: one more id is decided, the
        # third is over the cap; each is a decision of its own
        second = stub.ChooseVariant(_request("ann", "r-2"), timeout=30)
        third = stub.ChooseVariant(_request("ann", "r-3"), timeout=30)
        assert not second.suppressed and second.decision_id != first.decision_id
        assert third.suppressed and third.reason == "frequency_cap"
        assert stub.ChooseVariant(_request("ann", "r-2"), timeout=30) == second
        # the same id for another user (or campaign) is a request of its own
        other = stub.ChooseVariant(_request("bob", "r-1"), timeout=30)
        assert other.decision_id != first.decision_id and not other.suppressed
        logged = {r.decision_id: r for r in _export(stub) if r.user_id in ("ann", "bob")}
        assert sorted(logged) == sorted(
            [first.decision_id, second.decision_id, third.decision_id, other.decision_id])
        st = stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"), timeout=30)
        assert sum(v.decisions for v in st.variants) + st.holdout_decisions == 12 + 3


@pytest.fixture
def settings(tmp_path):
    from server.config import Settings
    from server.limits import Limits
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets",
                    limits=Limits(request_id_bytes=32, request_id_window_seconds=1.0))


@pytest.fixture
def stub(channel):
    return pb_grpc.CampaignServiceStub(channel)


async def test_an_id_is_remembered_for_the_window_then_decided_anew(stub, tailor_server):
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    first = await stub.ChooseVariant(_request("cy", "once"))
    again = await asyncio.gather(*(stub.ChooseVariant(_request("cy", "once")) for _ in range(5)))
    assert all(a == first for a in again)
    await asyncio.sleep(1.3)  # past Limits.request_id_window_seconds
    later = await stub.ChooseVariant(_request("cy", "once"))
    assert later.decision_id != first.decision_id and not later.suppressed
    # one entry an id: the later one (the expired one is deleted once its bucket is two back)
    from server.store.keys import REQUEST_PREFIX
    with tailor_server.store.read() as txn:
        kept = list(tailor_server.store.table("decisions").scan_prefix(txn, REQUEST_PREFIX))
    assert [json.loads(v)["d"] for _, v in kept][-1] == later.decision_id


async def test_a_request_id_over_its_bound_is_invalid(stub):
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    code, details = await code_of(stub.ChooseVariant(_request("cy", "x" * 33)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in details
    code, _ = await code_of(stub.ChooseVariant(_request("cy", "a\x01")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def _settled(server, user: str) -> dict[str, pb.DecisionRecord]:
    """The user's logged decisions once no withdrawal is in progress."""
    while server.campaigns._withdrawing:
        await asyncio.sleep(0.01)
    stub = pb_grpc.CampaignServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))
    return {r.decision_id: r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True, include_suppressed=True)) if r.user_id == user}


async def test_a_withdrawn_decision_is_never_the_answer_to_a_repeat(stub, tailor_server):
    """A first attempt cancelled once its record went to the writer (a deadline) is withdrawn;
    a repeat of its id afterwards is decided anew; a repeat that was answered the decision
    before the withdrawal keeps it from being withdrawn."""
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    campaigns = tailor_server.campaigns

    async def cancelled(user: str) -> None:
        call = asyncio.create_task(campaigns.choose("c1", user, {}, request_id="x"))
        await asyncio.sleep(0)  # decided, its record queued
        await asyncio.sleep(0)  # the batch handed to the writer
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call

    await cancelled("ann")
    logged = await _settled(tailor_server, "ann")
    assert [(r.status, r.reason) for r in logged.values()] == [("suppressed", "withdrawn")]
    again = await campaigns.choose("c1", "ann", {}, request_id="x")
    logged = await _settled(tailor_server, "ann")
    assert len(logged) == 2 and logged[again.decision_id].status == "pending"

    first = asyncio.create_task(campaigns.choose("c1", "bob", {}, request_id="x"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    repeat = asyncio.create_task(campaigns.choose("c1", "bob", {}, request_id="x"))
    await asyncio.sleep(0)  # queued behind the first attempt's batch
    first.cancel()
    answer = await repeat
    logged = await _settled(tailor_server, "bob")
    assert logged[answer.decision_id].status == "pending"  # never a withdrawn decision
    assert len(logged) == 1 and not answer.suppressed  # the first attempt's, kept


async def test_a_repeat_answered_in_its_first_attempts_batch_keeps_the_decision(
        stub, tailor_server):
    """A repeat of the id queued in the same writer batch as the first attempt (a caller's
    retry after its own timeout, the first still queued) is answered the first's decision:
    the first attempt cancelled then must not withdraw it (its caller, the repeat's, has it)."""
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    campaigns = tailor_server.campaigns
    first = asyncio.create_task(campaigns.choose("c1", "cal", {}, request_id="y"))
    repeat = asyncio.create_task(campaigns.choose("c1", "cal", {}, request_id="y"))
    await asyncio.sleep(0)  # both decided, their records queued in one batch
    first.cancel()
    answer = await repeat
    with contextlib.suppress(asyncio.CancelledError):
        await first
    logged = await _settled(tailor_server, "cal")
    assert list(logged) == [answer.decision_id]  # one decision, the repeat's answer
    assert logged[answer.decision_id].status == "pending" and not answer.suppressed
    # and a later repeat is still answered it
    assert (await campaigns.choose("c1", "cal", {}, request_id="y")).decision_id == \
        answer.decision_id


async def test_the_clients_retry_of_a_logged_decision_whose_answer_was_lost_gets_it(
        stub, tailor_server, monkeypatch):
    """The first attempt is logged, then answered UNAVAILABLE (what a campaigns writer that
    died after its commit answers: "the write may or may not have been made, retry"); the
    client's channel retries it: one logged decision, and the client gets it."""
    from clients.client import TailorClient
    from server.campaigns.choice import PendingChoice
    from server.errors import Unavailable
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    logged, lost = PendingChoice.logged, []

    async def answer_lost_once(self, on_cancel=None):
        choice = await logged(self, on_cancel)
        if not lost:
            lost.append(choice)
            raise Unavailable("the campaigns writer process exited before answering; the write "
                              "may or may not have been made, retry")
        return choice
    monkeypatch.setattr(PendingChoice, "logged", answer_lost_once)

    def choose():
        with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=30) as client:
            return client.choose_variant("c1", "eve")
    got = await asyncio.to_thread(choose)
    records = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True, include_suppressed=True))]
    assert lost and got.decision_id == lost[0].decision_id
    assert [r.decision_id for r in records] == [got.decision_id]


async def test_a_retry_after_the_campaign_was_archived_gets_the_logged_decision(stub):
    """The first attempt was logged (its answer lost); the campaign is archived before the
    client's retry: the retry is answered the decision made and logged for it, not refused
    (which would leave the client without the decision the log holds). A new request id, or
    one never answered, is refused as archived."""
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    first = await stub.ChooseVariant(_request("ann", "once"))
    await stub.ArchiveCampaign(pb.ArchiveCampaignRequest(campaign_id="c1"))
    assert await stub.ChooseVariant(_request("ann", "once")) == first
    for user, request_id in (("ann", "other"), ("bob", "once"), ("ann", "")):
        code, details = await code_of(stub.ChooseVariant(_request(user, request_id)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "archived" in details
    logged = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True, include_suppressed=True))]
    assert [r.decision_id for r in logged] == [first.decision_id]


async def test_a_retry_after_the_upgrade_gets_the_decision_remembered_by_the_unkeyed_digest(
        settings):
    """A store written before request digests were keyed remembers an id by the unkeyed digest
    of (caller, campaign, user, id): a client's retry of that call, made after the upgrade, is
    answered the decision logged for it, not a second decision."""
    import hashlib
    import time

    from server.limits import Limits
    from server.store import keys
    from tests.conftest import serving
    text = "".join(f"{len(p)}:{p};" for p in ("anonymous", "c1", "ann", "up"))
    old = hashlib.blake2b(text.encode(), digest_size=16, person=b"tailor-request").hexdigest()
    window = Limits(request_id_window_seconds=60.0)
    async with serving(settings.model_copy(update={"limits": window})) as (server, ch):
        stub = pb_grpc.CampaignServiceStub(ch)
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
        first = await stub.ChooseVariant(_request("ann", ""))  # its answer lost, say
        now = time.time()
        bucket = int(now * 1000) // 60_000 * 60_000
        server.store.write(lambda txn: server.store.table("decisions").put(
            txn, keys.request_key(bucket, old.encode()),
            json.dumps({"d": first.decision_id, "t": now, "r": 0}).encode()))
        again = await stub.ChooseVariant(_request("ann", "up"))
        logged = [r.decision_id async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
            campaign_id="c1", include_pending=True, include_suppressed=True))]
    assert again == first and logged == [first.decision_id]


async def test_a_repeat_in_its_first_attempts_batch_is_one_decision_whichever_digests_it_carries(
        stub, tailor_server):
    """A process computes a request id's unkeyed digest only in its first window
    (`RequestDigests`): two workers started at different times, or one call on each side of
    that moment, send the same request with both digests and with the keyed one alone. Queued
    in one writer batch, the repeat was told from the first attempt by the whole digest and
    logged as a second decision (a second contact against the caps)."""
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=_spec("c1")))
    campaigns = tailor_server.campaigns
    digests, until = campaigns._digests, campaigns._digests.unkeyed_until
    try:
        digests.unkeyed_until = float("inf")  # a worker in its first window: both digests
        first = campaigns.decide("c1", "dan", {}, request_id="z")
        digests.unkeyed_until = 0.0  # one past it: the keyed digest alone
        repeat = campaigns.decide("c1", "dan", {}, request_id="z")
    finally:
        digests.unkeyed_until = until
    assert first.request.startswith(repeat.request) and first.request != repeat.request
    answers = await asyncio.gather(first.logged(), repeat.logged())  # one batch
    logged = await _settled(tailor_server, "dan")
    assert [a.decision_id for a in answers] == [first.choice.decision_id] * 2
    assert list(logged) == [first.choice.decision_id]
