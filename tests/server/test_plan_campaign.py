"""PlanCampaign through a real server: one decision per user in order, each logged with its
propensity (ExportDecisions), fixed splits and holdouts as ChooseVariant decides them, the
contact policy (consent, frequency caps found by the writer), bad input, a stream cancelled
half-way keeping everything it answered, and the CLI."""
import asyncio
import contextlib
import json
import subprocess
import sys

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import ROOT, run_module
from tests.server.test_campaigns import choose, code_of, create, stats
from tests.server.test_stream_refusals import _refused


@pytest.fixture
def settings(tmp_path):
    from server.config import Settings
    from server.limits import Limits
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    limits=Limits(plan_batch_users=100, plan_stream_users=250,
                                  plan_read_ahead_users=60))  # streams here outgrow it


@pytest.fixture
def stub(channel):
    return pb_grpc.CampaignServiceStub(channel)


@pytest.fixture
def sizes(monkeypatch) -> list[int]:
    """The size of every slice the planner decides (its `_decide` calls, run as they are)."""
    from server.campaigns.plan import Planner
    seen, decide = [], Planner._decide

    def spy(self, first, live, user_ids, now, *rest):
        seen.append(len(user_ids))
        return decide(self, first, live, user_ids, now, *rest)
    monkeypatch.setattr(Planner, "_decide", spy)
    return seen


def users(start, n):
    return [f"u{i}" for i in range(start, start + n)]


async def plan(stub, batches, cid="c1") -> list[pb.PlanCampaignResponse]:
    msgs = [pb.PlanCampaignRequest(campaign_id=cid if i == 0 else "", user_ids=b)
            for i, b in enumerate(batches)]
    return [r async for r in stub.PlanCampaign(iter(msgs), timeout=60)]


async def logged(stub, cid="c1") -> dict[str, pb.DecisionRecord]:
    return {r.decision_id: r async for r in stub.ExportDecisions(
        pb.ExportDecisionsRequest(campaign_id=cid, include_pending=True, include_suppressed=True))}


async def test_one_logged_decision_per_user_in_order(stub):
    await create(stub)
    batches = [users(0, 100), users(100, 1), users(101, 40)]
    answers = await plan(stub, batches)
    assert [[d.user_id for d in a.decisions] for a in answers] == batches
    decisions = [d for a in answers for d in a.decisions]
    log = await logged(stub)
    assert len(log) == len(decisions) == 141
    for d in decisions:
        rec = log[d.decision_id]
        assert (rec.user_id, rec.arm, rec.variant_id, rec.status) == \
            (d.user_id, d.arm, d.variant_id, "pending")
        assert rec.propensity == d.propensity and 0 < d.propensity <= 1
        assert d.variant_id == f"v{d.arm}" and d.channel == "push" and not d.suppressed
    st = await stats(stub)
    assert sum(v.decisions for v in st.variants) == 141 and st.pending == 141


@pytest.mark.parametrize("on", ["push", "web"])
async def test_a_user_named_twice_in_a_stream_is_decided_once(stub, on):
    """A user named again (in the same message, or a later one: an audience file listing them
    twice) is answered suppressed `duplicate` there: one decision drawn, counted and capped,
    one contact; every other user is decided as before. Whether the contact policy reads the
    profile (push: its consent) or checks nothing (web: no consent, cap or address)."""
    await create(stub, channel=on)
    answers = await plan(stub, [["a", "b", "a"], ["b", "c"], ["c"]])
    got = [(d.user_id, d.suppressed, d.reason) for a in answers for d in a.decisions]
    assert got == [("a", False, ""), ("b", False, ""), ("a", True, "duplicate"),
                   ("b", True, "duplicate"), ("c", False, ""), ("c", True, "duplicate")]
    again = [d for a in answers for d in a.decisions if d.suppressed]
    assert all((d.arm, d.variant_id, d.propensity) == (-2, "", 0.0) for d in again)
    log = await logged(stub)
    assert sorted(r.user_id for r in log.values() if r.status == "pending") == ["a", "b", "c"]
    st = await stats(stub)
    assert sum(v.decisions for v in st.variants) == 3 and st.pending == 3
    # another stream is a plan of its own: its users are decided again
    (answer,) = await plan(stub, [["a"]])
    assert not answer.decisions[0].suppressed


async def test_fixed_split_and_holdout_as_choose_variant_decides(stub):
    await create(stub, policy="fixed", arms=2, params={"holdout": 0.25},
                 variants=[pb.Variant(id="a", weight=1), pb.Variant(id="b", weight=3)])
    answers = await plan(stub, [users(0, 100)])
    for d in answers[0].decisions:
        single = await choose(stub, d.user_id)
        assert (d.arm, d.variant_id, d.holdout) == (single.arm, single.variant_id, single.holdout)
        # By hand: the holdout's share, else the arm's weight (1/4, 3/4).
        assert d.propensity == (0.25 if d.holdout else [0.25, 0.75][d.arm])
    held = sum(d.holdout for d in answers[0].decisions)
    assert 5 <= held <= 50  # 25 expected; hashes of u0..u99 are fixed, this cannot flake


async def test_users_without_consent_are_suppressed_and_logged_as_such(stub, channel):
    await create(stub, channel="email")  # email: an opt-in is required by default
    profiles = ppb_grpc.ProfileServiceStub(channel)
    for user, opted_in in (("u0", True), ("u1", False), ("u2", True)):
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email",
                                                        opted_in=opted_in, source="test"))
    got = (await plan(stub, [users(0, 4)]))[0].decisions
    assert [(d.suppressed, d.reason) for d in got] == \
        [(False, ""), (True, "no_consent"), (False, ""), (True, "no_consent")]
    for d in got:
        assert d.channel == "email" and (d.variant_id == "") == d.suppressed
        assert not d.holdout and (d.propensity > 0) != d.suppressed
    log = await logged(stub)
    assert {d.user_id: (log[d.decision_id].status, log[d.decision_id].reason) for d in got} == {
        "u0": ("pending", ""), "u1": ("suppressed", "no_consent"), "u2": ("pending", ""),
        "u3": ("suppressed", "no_consent")}
    st = await stats(stub)
    assert sum(v.decisions for v in st.variants) == 2 and st.pending == 2


@pytest.mark.parametrize("policy", ["linucb", "lints"])
async def test_a_linear_campaign_answers_a_slice_whose_users_are_all_suppressed(stub, policy):
    await create(stub, policy=policy, channel="email", context_features=["request.x"])
    msgs = [pb.PlanCampaignRequest(campaign_id="c1", user_ids=users(0, 2), context={"x": 1.0})]
    got = [d async for a in stub.PlanCampaign(iter(msgs), timeout=60) for d in a.decisions]
    assert [(d.user_id, d.suppressed, d.reason) for d in got] == \
        [("u0", True, "no_consent"), ("u1", True, "no_consent")]


async def test_a_large_message_is_decided_in_slices_and_answered_as_one(stub, channel, sizes,
                                                                         monkeypatch):
    from server.campaigns import plan as planning
    monkeypatch.setattr(planning, "DECIDE_SLICE", 3)
    await create(stub, channel="email")
    profiles = ppb_grpc.ProfileServiceStub(channel)
    for i in range(0, 10, 2):  # even users opted in; odd ones have no consent
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=f"u{i}", channel="email",
                                                        opted_in=True, source="test"))
    answers = await plan(stub, [users(0, 10), users(10, 2)])
    assert sizes == [3, 3, 3, 1, 2]
    assert [[d.user_id for d in a.decisions] for a in answers] == [users(0, 10), users(10, 2)]
    got = answers[0].decisions
    assert [(d.suppressed, d.reason) for d in got] == \
        [(False, ""), (True, "no_consent")] * 5
    log = await logged(stub)
    assert [log[d.decision_id].status for d in got] == ["pending", "suppressed"] * 5
    assert all(log[d.decision_id].user_id == d.user_id and log[d.decision_id].propensity == d.propensity
               for d in got)
    assert len({d.decision_id for d in got}) == 10


async def test_a_sliced_message_gets_the_writers_cap_reasons_in_order(stub, sizes, monkeypatch):
    from server.campaigns import plan as planning
    monkeypatch.setattr(planning, "DECIDE_SLICE", 2)  # slices [a c] [d b] [e], logged apart
    await create(stub, frequency_caps=[pb.FrequencyCap(channel="*", max=1, window_seconds=86400)])
    for user in ("c", "d"):  # contacted already: the writer finds them over the cap
        assert not (await choose(stub, user)).suppressed
    got = (await plan(stub, [["a", "c", "d", "b", "e"]]))[0].decisions
    assert sizes == [2, 2, 1]
    assert [(d.user_id, d.suppressed, d.reason) for d in got] == [
        ("a", False, ""), ("c", True, "frequency_cap"), ("d", True, "frequency_cap"),
        ("b", False, ""), ("e", False, "")]
    log = await logged(stub)
    assert [log[d.decision_id].status for d in got] == \
        ["pending", "suppressed", "suppressed", "pending", "pending"]


def fail_slice(monkeypatch, failing: int, size: int) -> tuple[list, object]:
    """Slices of `size` users, the `failing`-th of which raises: (the user ids of each slice
    decided or failed, in order; a function that makes the planner decide as it did)."""
    from server.campaigns import plan as planning
    decide, calls = planning.Planner._decide, []

    def failing_decide(self, first, live, user_ids, now, *rest):
        calls.append(list(user_ids))
        if len(calls) == failing:
            raise ValueError("a slice failed")
        return decide(self, first, live, user_ids, now, *rest)
    monkeypatch.setattr(planning, "DECIDE_SLICE", size)
    monkeypatch.setattr(planning.Planner, "_decide", failing_decide)
    return calls, lambda: monkeypatch.setattr(planning.Planner, "_decide", decide)


async def test_a_message_failing_part_way_fails_the_stream_and_logs_no_later_slice(
        stub, monkeypatch):
    calls, restore = fail_slice(monkeypatch, failing=2, size=4)
    await create(stub)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await plan(stub, [users(0, 10)])
    assert err.value.code() == grpc.StatusCode.INTERNAL and len(calls) == 2
    logged_users = {r.user_id for r in (await logged(stub)).values()}
    assert logged_users <= set(users(0, 4))  # the first slice at most; never a later one
    restore()
    again = await plan(stub, [users(20, 5)])  # the planner still serves
    assert [d.user_id for d in again[0].decisions] == users(20, 5)


async def test_a_frequency_cap_is_held_where_the_batch_is_logged(stub):
    await create(stub, frequency_caps=[pb.FrequencyCap(channel="*", max=1, window_seconds=86400)])
    assert not (await choose(stub, "a")).suppressed
    got = (await plan(stub, [["a", "b", "c"]]))[0].decisions
    assert [(d.user_id, d.suppressed, d.reason) for d in got] == [
        ("a", True, "frequency_cap"), ("b", False, ""), ("c", False, "")]
    assert got[0].variant_id == "" and got[0].propensity == 0
    log = await logged(stub)
    assert [log[d.decision_id].status for d in got] == ["suppressed", "pending", "pending"]
    again = (await plan(stub, [["b"]]))[0].decisions  # the cap holds across streams too
    assert (again[0].suppressed, again[0].reason) == (True, "frequency_cap")


async def test_a_message_without_users_is_answered_in_its_turn_with_no_decisions(stub):
    await create(stub)
    answers = await plan(stub, [[], ["a", "b"], [], ["c"]])
    assert [[d.user_id for d in a.decisions] for a in answers] == [[], ["a", "b"], [], ["c"]]


async def test_unknown_campaign_is_not_found(stub):
    code, details = await code_of(plan(stub, [users(0, 3)], cid="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details


async def test_first_message_without_campaign_is_invalid(stub):
    await create(stub)
    code, details = await code_of(plan(stub, [users(0, 3)], cid=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("campaign_id")


async def test_bad_batches_fail_after_the_ones_before_them(stub):
    await create(stub)
    call = stub.PlanCampaign(iter([pb.PlanCampaignRequest(campaign_id="c1", user_ids=users(0, 5)),
                                   pb.PlanCampaignRequest(user_ids=users(5, 101))]))
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for answer in call:
            got.append(answer)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_ids: 101 entries, at most 100" in err.value.details()
    assert [len(a.decisions) for a in got] == [5]
    code, details = await code_of(plan(stub, [users(0, 3), ["ok", "bad\x1fid"]]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("user_ids[1].user_id")


async def _refused_at_another_context(stub, ctx: dict, other: dict) -> None:
    """Users a and b planned with `ctx` (b's message repeating it), then c's message, carrying
    `other`, refused INVALID_ARGUMENT after the two answers."""
    msgs = [pb.PlanCampaignRequest(campaign_id="c1", user_ids=["a"], context=ctx),
            pb.PlanCampaignRequest(user_ids=["b"], context=ctx),
            pb.PlanCampaignRequest(user_ids=["c"], context=other)]
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for answer in stub.PlanCampaign(iter(msgs)):
            got.append(answer)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("context")
    assert [[d.user_id for d in a.decisions] for a in got] == [["a"], ["b"]]


async def test_a_later_message_with_another_context_is_refused_not_ignored(stub):
    """Context is read from the first message: a later message carrying another (a client
    sending each batch's own context) was planned with the first's, silently; it is refused,
    after the batches before it. Repeating the first message's context is fine."""
    await create(stub, context_features=["request.x"], policy="linucb")
    await _refused_at_another_context(stub, {"x": 1.0}, {"x": 2.0})
    assert {r.user_id: list(r.context) for r in (await logged(stub)).values()} == \
        {"a": [1.0], "b": [1.0]}


async def test_a_later_message_repeating_a_context_that_holds_a_nan_is_planned(stub):
    """A client repeated the first message's context, as the proto allows, and it held a NaN
    under a key the campaign does not read (accepted, as ChooseVariant accepts it): NaN is
    unequal to itself, so the repeat was taken for another context and the stream refused.
    Contexts are compared value by value, NaN matching NaN; another value is still refused."""
    await create(stub)  # reads no request.* feature
    ctx = {"segment": float("nan"), "x": 1.0}
    await _refused_at_another_context(stub, ctx, {"segment": float("nan"), "x": 2.0})
    chosen = await choose(stub, "d", **ctx)  # ChooseVariant takes that context too
    assert chosen.variant_id


async def test_too_many_users_in_one_stream_is_resource_exhausted(stub):
    await create(stub)
    code, details = await code_of(plan(stub, [users(0, 100), users(100, 100), users(200, 51)]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "250" in details


async def test_cancelled_stream_keeps_every_answered_decision(stub):
    await create(stub)
    call = stub.PlanCampaign()
    answered = []
    for start in (0, 100):
        await call.write(pb.PlanCampaignRequest(campaign_id="c1" if start == 0 else "",
                                                user_ids=users(start, 100)))
        answered += (await call.read()).decisions
    await call.write(pb.PlanCampaignRequest(user_ids=users(200, 50)))
    call.cancel()
    await asyncio.sleep(0.3)
    log = await logged(stub)
    assert len(answered) == 200
    assert all(log[d.decision_id].propensity == d.propensity for d in answered)
    assert len(log) in (200, 250)  # the third batch may or may not have reached the writer

    async def third_settled():
        """The third batch, if logged, is withdrawn as a whole, or (its answer handed to the
        connection before the cancel arrived: answered, as far as the server can know) kept
        pending as a whole; never part of it either way."""
        log = await logged(stub)
        states = {(r.status, r.reason) for r in log.values() if r.user_id in set(users(200, 50))}
        return states <= {("suppressed", "withdrawn")} or states == {("pending", "")}
    assert await _until(third_settled)


async def test_cli_writes_json_lines_in_order_with_progress(stub, tailor_server, tmp_path):
    await create(stub)
    audience = users(0, 120)
    (tmp_path / "users.txt").write_text("\n".join(audience) + "\n")
    out = await asyncio.to_thread(
        run_module, "clients", "campaign", "plan", "--server", f"127.0.0.1:{tailor_server.port}",
        "--campaign", "c1", "--users", str(tmp_path / "users.txt"), "--batch-size", "50")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["user_id"] for d in lines] == audience
    log = await logged(stub)
    assert all(log[d["decision_id"]].propensity == d["propensity"] for d in lines)
    assert all((log[d["decision_id"]].channel_propensity, log[d["decision_id"]].send_at_propensity)
               == (d["channel_propensity"], d["send_at_propensity"]) == (1.0, 1.0) for d in lines)
    assert "120/120" in out.stderr  # the progress bar, on stderr
    summary = json.loads(out.stderr[out.stderr.index("{"):])
    assert summary == {"decisions": 120, "suppressed": 0, "holdout": 0, "out": "-"}


async def test_cli_reads_the_audience_file_as_campaign_send_does(stub, tailor_server, tmp_path):
    """The file `campaign send` takes (blank lines and # comments skipped) plans the same
    users: no decision for a comment line."""
    await create(stub)
    (tmp_path / "users.txt").write_text("# audience of 2026-12-04\nu0\n\n  # the rest\nu1\n")
    out = await asyncio.to_thread(
        run_module, "clients", "campaign", "plan", "--server", f"127.0.0.1:{tailor_server.port}",
        "--campaign", "c1", "--users", str(tmp_path / "users.txt"), "--quiet")
    assert [json.loads(line)["user_id"] for line in out.stdout.splitlines()] == ["u0", "u1"]
    assert sorted(r.user_id for r in (await logged(stub)).values()) == ["u0", "u1"]


async def test_cli_refuses_to_write_its_answers_over_the_audience_file(stub, tailor_server,
                                                                        tmp_path):
    """`--out` naming the `--users` file (a slip of the shell) truncated the audience before it
    was read: nobody planned, exit 0, and the audience file gone. Refused, the file kept."""
    await create(stub)
    audience = tmp_path / "users.txt"
    audience.write_text("u0\nu1\n")
    for out in (str(audience), str(tmp_path / "." / "users.txt")):
        got = await asyncio.to_thread(
            run_module, "clients", "campaign", "plan", "--server",
            f"127.0.0.1:{tailor_server.port}", "--campaign", "c1", "--users", str(audience),
            "--out", out, "--quiet", check=False)
        assert got.returncode == 2 and "--out" in got.stderr, got.stderr
        assert audience.read_text() == "u0\nu1\n"
    assert await logged(stub) == {}


async def _until(check, seconds=5.0):
    """Poll `check()` (a coroutine function) until it is true or `seconds` pass; its last value."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (got := await check()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return got


def open_plan(tailor_server) -> tuple[asyncio.Queue, object]:
    """A PlanCampaign stream on the server's handler: (the queue its requests are put on, the
    batches it answers), so that a test can close it between a batch's log and its answer."""
    requests: asyncio.Queue = asyncio.Queue()

    async def stream():
        while (req := await requests.get()) is not None:
            yield req
    return requests, tailor_server.campaigns.plan(stream())


async def test_decisions_of_a_stream_closed_before_answering_them_are_withdrawn(
        stub, tailor_server):
    """The caller never received the second batch (the stream closed once it was logged, before
    its answer): its decisions neither count toward the frequency cap nor wait for a reward."""
    from server.campaigns import PlanRequest
    await create(stub, frequency_caps=[pb.FrequencyCap(channel="*", max=1, window_seconds=86400)])
    requests, batches = open_plan(tailor_server)
    await requests.put(PlanRequest("c1", ["a"]))
    first = await batches.__anext__()
    first.handed()  # given to the transport, as the servicer does
    await requests.put(PlanRequest("", ["b", "c"]))
    assert await _until(lambda: _records_of(stub, {"b", "c"}, 2))  # logged, not yet answered
    await batches.aclose()
    unanswered = await _until(lambda: _records_of(stub, {"b", "c"}, 2, status="suppressed"))
    assert [(r.user_id, r.reason, r.arm, r.variant_id) for r in unanswered] == [
        ("b", "withdrawn", -2, ""), ("c", "withdrawn", -2, "")]
    log = await logged(stub)
    assert log[first.decision_ids[0]].status == "pending"  # answered: kept
    st = await stats(stub)
    assert (sum(v.decisions for v in st.variants), st.pending) == (1, 1)
    again = (await plan(stub, [["a", "b", "c"]]))[0].decisions
    assert [(d.user_id, d.suppressed, d.reason) for d in again] == [
        ("a", True, "frequency_cap"), ("b", False, ""), ("c", False, "")]
    code, _ = await code_of(stub.ReportReward(pb.ReportRewardRequest(
        decision_id=unanswered[0].decision_id, reward=1.0)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_batch_the_servicer_never_handed_to_the_transport_is_withdrawn(stub, tailor_server):
    """A batch yielded to the servicer is converted to its answer (500 decisions between turns
    of the event loop) before the transport gets it: a stream cancelled meanwhile (3 of 10
    cancels of a 4 x 10,000-user plan on main, two of them there) left the batch's 10,000
    decisions pending though nobody received them (caps held, default rewards taken). It is
    withdrawn unless the servicer said it handed it over (`PlanBatch.handed`), or asked for
    the next one; a batch handed over is kept."""
    from server.campaigns import PlanRequest
    await create(stub)
    requests, batches = open_plan(tailor_server)
    await requests.put(PlanRequest("c1", ["a"]))
    await batches.__anext__()
    await requests.put(PlanRequest("", ["b", "c"]))
    converting = await batches.__anext__()  # took the first; this one the stream never hands
    await batches.aclose()
    unanswered = await _until(lambda: _records_of(stub, {"b", "c"}, 2, status="suppressed"))
    assert [(r.user_id, r.reason) for r in unanswered] == [("b", "withdrawn"), ("c", "withdrawn")]
    assert sorted(converting.user_ids) == ["b", "c"]
    assert [r.status for r in (await logged(stub)).values() if r.user_id == "a"] == ["pending"]
    st = await stats(stub)
    assert (sum(v.decisions for v in st.variants), st.pending) == (1, 1)


async def test_an_unanswered_batch_is_withdrawn_whole_behind_a_suppressed_user(stub, tailor_server):
    """The withdrawal paired the batch's pending decision ids with the commit's reasons, one a
    row: behind a user the planner suppressed (no consent) the pairs slipped, and a pending
    decision nobody received kept its user's cap and took the default reward later."""
    from server.campaigns import PlanRequest
    await create(stub)
    await tailor_server.profiles.set_consent("x", "push", False, "test")
    requests, batches = open_plan(tailor_server)
    await requests.put(PlanRequest("c1", ["a"]))
    await batches.__anext__()
    await requests.put(PlanRequest("", ["x", "b", "c"]))
    assert await _until(lambda: _records_of(stub, {"b", "c"}, 2))  # logged, not yet answered
    await batches.aclose()
    unanswered = await _until(lambda: _records_of(stub, {"b", "c"}, 2, status="suppressed"))
    assert [(r.user_id, r.reason) for r in unanswered] == [("b", "withdrawn"), ("c", "withdrawn")]
    [x] = [r for r in (await logged(stub)).values() if r.user_id == "x"]
    assert (x.status, x.reason) == ("suppressed", "no_consent")


async def _records_of(stub, who, n, status="pending") -> list:
    """The logged records of users `who` with `status`, by user, if there are `n` of them."""
    got = sorted((r for r in (await logged(stub)).values()
                  if r.user_id in who and r.status == status), key=lambda r: r.user_id)
    return got if len(got) == n else []


async def test_a_stream_failing_part_way_withdraws_the_slices_it_logged(stub, monkeypatch):
    _, restore = fail_slice(monkeypatch, failing=3, size=2)
    await create(stub, frequency_caps=[pb.FrequencyCap(channel="*", max=1, window_seconds=86400)])
    code, _ = await code_of(plan(stub, [["a", "b", "c", "d", "e", "f"]]))
    assert code == grpc.StatusCode.INTERNAL
    await asyncio.sleep(0.3)
    left = {r.user_id: (r.status, r.reason) for r in (await logged(stub)).values()}
    assert set(left.values()) <= {("suppressed", "withdrawn")}  # what was logged is withdrawn
    restore()
    again = (await plan(stub, [["a", "b", "c", "d"]]))[0].decisions
    assert [(d.suppressed, d.reason) for d in again] == [(False, "")] * 4


async def test_cli_audience_refused_at_its_first_line_leaves_the_out_file_as_it_was(
        stub, tailor_server, tmp_path):
    """An audience read from a pipe whose first line is not UTF-8 plans nobody (exit 2); the
    call ended without an answer, and last week's --out file was emptied all the same."""
    await create(stub)
    kept = tmp_path / "plan.jsonl"
    kept.write_text('{"decision_id": "d1"}\n')
    got = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "clients", "campaign", "plan", "--server",
                         f"127.0.0.1:{tailor_server.port}", "--campaign", "c1", "--users", "-",
                         "--out", str(kept), "--quiet"],
        cwd=ROOT, input=b"\xff\xfe\n", capture_output=True, timeout=120)
    assert got.returncode == 2, got.stderr
    assert got.stderr.decode().strip() == \
        "error: stdin line 1: not UTF-8 text; the 0 users before it were planned"
    assert kept.read_text() == '{"decision_id": "d1"}\n'
    fresh = tmp_path / "fresh.jsonl"
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "clients", "campaign", "plan", "--server",
                         f"127.0.0.1:{tailor_server.port}", "--campaign", "c1", "--users", "-",
                         "--out", str(fresh), "--quiet"],
        cwd=ROOT, input=b"\xff\n", capture_output=True, timeout=120)
    assert not fresh.exists()


async def test_streams_past_the_workers_bound_are_resource_exhausted(tmp_path):
    """Each stream keeps 8 bytes a user it named (up to 80 MB at plan_stream_users' default):
    with no bound on streams at once, a decider could hold any number (on main a third stream
    beside two open ones was served). Past `Limits.plan_streams` a stream is refused
    RESOURCE_EXHAUSTED naming the limit; once one ends, the next is served."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        limits=Limits(plan_streams=2))
    async with serving(settings) as (_, ch):
        stub = pb_grpc.CampaignServiceStub(ch)
        await create(stub)
        ends = [asyncio.Event() for _ in range(2)]

        def held(end: asyncio.Event, user: str):
            async def requests():
                yield pb.PlanCampaignRequest(campaign_id="c1", user_ids=[user])
                await end.wait()
            return stub.PlanCampaign(requests())
        open_calls = [held(end, f"u{i}") for i, end in enumerate(ends)]
        firsts = [await call.read() for call in open_calls]  # both served, both still open
        assert [a.decisions[0].user_id for a in firsts] == ["u0", "u1"]
        code, details = await code_of(plan(stub, [["u2"]]))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "plan_streams" in details
        # A stream refused busy is read to its end first, as every refused stream (a status
        # sent before the client half-closed raced its writes in grpc.aio's client, which then
        # reported INTERNAL instead: grpc/grpc#36066, CI failed on it); before, the refusal came
        # at once and the client's stream was never read. None: the client never ends it.
        for last in (pb.PlanCampaignRequest(campaign_id="c1", user_ids=["late"]), None):
            code, details, ended = await _refused(
                lambda r: _answered(stub.PlanCampaign(r, timeout=60)), [], last)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "plan_streams" in details
            assert ended is (last is not None)  # read to its end, or refused all the same
        ends[0].set()
        assert await open_calls[0].read() == grpc.aio.EOF
        for _ in range(50):  # the server ends the stream's handler just after its last answer
            try:
                again = await plan(stub, [["u3"]])
                break
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        assert [d.user_id for d in again[0].decisions] == ["u3"]
        ends[1].set()
        assert await open_calls[1].read() == grpc.aio.EOF


async def _answered(call) -> list[pb.PlanCampaignResponse]:
    return [a async for a in call]


async def _paced(stub, users_: list[str], pause: float) -> list[str]:
    """A PlanCampaign stream of one user a message, each sent `pause` s after the answer to
    the one before was read; the users answered, in order (the bound on streams may refuse it
    until a stream that just ended has released its place)."""
    took = asyncio.Event()
    for _ in range(50):
        took.clear()

        async def requests():
            for i, user in enumerate(users_):
                if i:
                    await took.wait()
                    took.clear()
                    await asyncio.sleep(pause)
                yield pb.PlanCampaignRequest(campaign_id="c1" if i == 0 else "", user_ids=[user])
        got = []
        try:
            async for answer in stub.PlanCampaign(requests()):
                got += [d.user_id for d in answer.decisions]
                took.set()
            return got
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "plan_streams" in e.details()
            await asyncio.sleep(0.05)
    raise AssertionError("the stream's place was never freed")


async def test_a_stream_that_owes_its_next_message_past_the_idle_bound_ends_and_frees_its_place(
        tmp_path):
    """A decider could hold every plan place of a worker by opening `plan_streams` streams and
    sending nothing (until the connection's age ended them, ~6 minutes). Past
    `Limits.plan_idle_seconds` with every message answered and taken, the stream ends
    RESOURCE_EXHAUSTED naming the limit, its answered batch stands, and the place is free;
    a client slower than the bound in total, but sending each next batch within it of the
    last answer, and one whose answers take the server longer than the bound, are served."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        limits=Limits(plan_streams=1, plan_idle_seconds=0.6))
    async with serving(settings) as (server, ch):
        stub = pb_grpc.CampaignServiceStub(ch)
        await create(stub)
        end = asyncio.Event()

        async def silent():
            yield pb.PlanCampaignRequest(campaign_id="c1", user_ids=["u0"])
            await end.wait()
        call = stub.PlanCampaign(silent())
        assert [d.user_id for d in (await call.read()).decisions] == ["u0"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), 10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "plan_idle_seconds" in err.value.details()
        end.set()
        assert [r for r in (await logged(stub)).values()
                if r.user_id == "u0" and r.status == "pending"]  # answered: kept
        # 4 batches 0.4 s after each answer: 1.2 s of the client's pauses in all
        assert await _paced(stub, ["s0", "s1", "s2", "s3"], 0.4) == ["s0", "s1", "s2", "s3"]

        log = server.campaigns._plan_log  # commits slower than the bound: no idleness
        submit = log.enqueue

        def late(rows):
            future = asyncio.get_running_loop().create_future()

            async def after():
                await asyncio.sleep(1.0)
                future.set_result(await submit(rows))
            asyncio.ensure_future(after())
            return future
        log.enqueue = late
        try:
            assert await _paced(stub, ["w0", "w1"], 0.0) == ["w0", "w1"]
        finally:
            del log.enqueue


async def _planned_once_free(stub, user: str, seconds: float) -> list[str]:
    """The users a one-user PlanCampaign answers, once the worker has a place for it (refused
    `plan_streams` until then; an AssertionError past `seconds`)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return [d.user_id for d in (await plan(stub, [[user]]))[0].decisions]
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "plan_streams" in e.details()
            assert asyncio.get_running_loop().time() < deadline, "the stream's place was never freed"
            await asyncio.sleep(0.05)


SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
"""A client channel's flow-control window: 1 KB a stream, never grown (an answer of 300 users
takes ~20 KB), so an answer it does not read is held back."""


@contextlib.asynccontextmanager
async def _unread_bound(tmp_path, seconds: float):
    """(server, stub) of a server with one plan place and `plan_unread_seconds` = `seconds`,
    campaign c1 created."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        limits=Limits(plan_streams=1, plan_unread_seconds=seconds))
    async with serving(settings) as (server, ch):
        stub = pb_grpc.CampaignServiceStub(ch)
        await create(stub)
        yield server, stub


async def test_a_stream_whose_client_stopped_reading_ends_past_the_bound_and_frees_its_place(
        tmp_path):
    """A client that opened a stream and stopped reading held its place of `plan_streams` for
    as long as its connection lived: HTTP/2 flow control held the next answer back, and the
    idle clock (`plan_idle_seconds`) stops while an answer is being sent. Past
    `Limits.plan_unread_seconds` with an answer held back, the stream ends RESOURCE_EXHAUSTED
    naming the limit and another caller gets the place; the batches answered stand (the one
    held back too: the client may still get it) and one decided after it is withdrawn."""
    async with _unread_bound(tmp_path, 0.5) as (server, stub):
        end = asyncio.Event()

        async def requests():
            for i in range(3):
                yield pb.PlanCampaignRequest(campaign_id="c1" if i == 0 else "",
                                             user_ids=users(300 * i, 300))
            await end.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}",
                                             options=SMALL_WINDOW) as slow:
            call = pb_grpc.CampaignServiceStub(slow).PlanCampaign(requests())
            late: list[str] = []
            try:
                assert len((await call.read()).decisions) == 300  # then it reads no more
                assert await _planned_once_free(stub, "n0", 10.0) == ["n0"]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    while (answer := await asyncio.wait_for(call.read(), 10)) != grpc.aio.EOF:
                        late += [d.user_id for d in answer.decisions]
            finally:
                end.set()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "plan_unread_seconds" in err.value.details()
        assert late in ([], users(300, 300))  # the answer held back, or nothing after the first
        log = await logged(stub)
        assert {r.status for r in log.values() if r.user_id in set(users(0, 600))} == {"pending"}
        after = set(users(600, 300))  # decided ahead (if read before the end): withdrawn

        async def after_settled():
            states = {(r.status, r.reason) for r in (await logged(stub)).values()
                      if r.user_id in after}
            return states <= {("suppressed", "withdrawn")}
        assert await _until(after_settled)


async def test_a_client_that_never_read_its_first_answer_gets_the_status(tmp_path):
    """The first answer carries the stream's headers: when it was the one held back past
    `plan_unread_seconds`, the status then tried to send the headers a second time, which gRPC
    refused (an ExecuteBatchError logged), so the client got no status and its stream hung
    until the connection ended. Now it gets RESOURCE_EXHAUSTED naming the limit, after the
    answer held back (which stands)."""
    async with _unread_bound(tmp_path, 0.3) as (server, stub):
        end = asyncio.Event()

        async def requests():
            yield pb.PlanCampaignRequest(campaign_id="c1", user_ids=users(0, 300))
            await end.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}",
                                             options=SMALL_WINDOW) as slow:
            call = pb_grpc.CampaignServiceStub(slow).PlanCampaign(requests())
            try:
                await asyncio.wait_for(call.initial_metadata(), 10)  # its first answer is sent
                assert await _planned_once_free(stub, "n0", 10.0) == ["n0"]  # it never read
                late = []
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    while (answer := await asyncio.wait_for(call.read(), 5)) != grpc.aio.EOF:
                        late += [d.user_id for d in answer.decisions]
            finally:
                end.set()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "plan_unread_seconds" in err.value.details()
        assert late == users(0, 300)
        log = await logged(stub)
        assert {r.status for r in log.values() if r.user_id in set(late)} == {"pending"}
