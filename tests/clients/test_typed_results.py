"""TailorClient returns typed results (dataclasses) and the package ships `py.typed`."""
import asyncio
import json
import time
import tomllib

from clients import Choice, RejectedEvent, Reward, TailorClient, TrackResult
from tests.conftest import ROOT, run_module


def calls(target: str):
    now = time.time() - 60
    with TailorClient(target, timeout=10) as client:
        events = [{"event_id": "e1", "user_id": "u1", "type": "view", "timestamp": now},
                  {"event_id": "e2", "user_id": "", "type": "view", "timestamp": now}]
        batch = client.track_batch(events)
        stream = client.track(iter(events))
        client.create_campaign({"campaign_id": "c1", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"subject": "hi"}}]})
        choice = client.choose_variant("c1", "u1")
        reward = client.report_reward(choice.decision_id, 1.0)
    return batch, stream, choice, reward


async def test_results_are_typed(target):
    batch, stream, choice, reward = await asyncio.to_thread(calls, target)
    assert isinstance(batch, TrackResult) and (batch.accepted, batch.duplicates) == (1, 0)
    assert batch.accepted_ids == ["e1"] and len(batch.rejected) == 1
    (rejected,) = batch.rejected
    assert isinstance(rejected, RejectedEvent) and (rejected.index, rejected.event_id) == (1, "e2")
    assert (stream.accepted, stream.duplicates, [r.index for r in stream.rejected]) == (0, 1, [1])
    assert choice == Choice(choice.decision_id, "a", 0, 1.0, False, {"subject": "hi"}, channel="web")
    assert reward == Reward("c1", "a", False)


def test_the_client_package_is_marked_typed():
    assert (ROOT / "clients" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["*"]


async def test_the_asyncio_client_returns_the_same_types(target):
    import grpc
    import pytest

    from clients import TailorError
    from clients.aio import AsyncTailorClient
    async with AsyncTailorClient(target, timeout=10) as client:
        assert await client.health() == "SERVING"
        tracked = await client.track_batch([{"event_id": "a1", "user_id": "u2", "type": "view",
                                             "timestamp": time.time() - 60}])
        assert tracked == TrackResult(1, 0, [], ["a1"])
        assert (await client.get_profile("u2")).user_id == "u2"
        with pytest.raises(TailorError) as missing:
            await client.get_profile("nobody")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        with TailorClient(target) as blocking:  # the server runs on this loop: call from a thread
            await asyncio.to_thread(blocking.create_campaign, {"campaign_id": "c2", "policy": "fixed",
                                                               "variants": [{"id": "b"}]})
        choice = await client.choose_variant("c2", "u2")
        assert isinstance(choice, Choice) and choice.variant_id == "b"
        assert await client.report_reward(choice.decision_id, 0.5) == Reward("c2", "b", False)


def more_calls(target: str):
    with TailorClient(target, timeout=10) as client:
        client.track_batch([{"event_id": "p1", "user_id": "u3", "type": "purchase", "value": 12.5,
                             "timestamp": time.time() - 60}])
        consented = client.set_consent("u3", "email", True, "form")
        profile = client.get_profile("u3")
        listed = client.add_suppression(email="a@example.com", reason="bounce")
        checked = client.check_suppression(email="b@example.com")
        made = client.create_campaign({"campaign_id": "c3", "policy": "fixed",
                                       "variants": [{"id": "a"}, {"id": "b"}]})
        client.choose_variant("c3", "u3")
        stats = client.campaign_stats("c3")
        size = client.sample_size(0.02, baseline_rate=0.1, allocation=[1, 3])
    return consented, profile, listed, checked, made, stats, size


async def test_profile_campaign_and_suppression_results_are_typed(target):
    from clients import Campaign, CampaignStats, Profile, SampleSize, Suppression
    from kernels import abtest
    consented, profile, listed, checked, made, stats, size = await asyncio.to_thread(more_calls, target)
    assert isinstance(consented, Profile) and consented.consent["email"].opted_in is True
    assert consented.consent["email"].source == "form"
    assert isinstance(profile.features.n_events, int) and profile.features.n_events == 1
    assert profile.features.monetary == 12.5 and [e.event_id for e in profile.events] == ["p1"]
    assert listed == Suppression(True, "bounce", listed.timestamp, "email") and listed.timestamp > 0
    assert isinstance(checked, Suppression) and not checked.suppressed
    assert isinstance(made, Campaign) and made.revision == 1 and made.spec["campaign_id"] == "c3"
    assert isinstance(stats, CampaignStats) and [v.variant_id for v in stats.variants] == ["a", "b"]
    assert sum(v.decisions for v in stats.variants) == 1 and stats.pending == 1
    want = abtest.sample_size(0.02, baseline_rate=0.1, allocation=[1, 3])
    assert isinstance(size, SampleSize) and tuple(size.per_arm) == want.per_arm
    assert size.total == sum(want.per_arm)


async def test_the_cli_prints_a_typed_result_as_json(target):
    from tests.conftest import run_module
    await asyncio.to_thread(more_calls, target)
    out = await asyncio.to_thread(run_module, "clients", "profile", "--server", target, "--user", "u3")
    prof = json.loads(out.stdout)
    assert prof["user_id"] == "u3" and prof["features"]["monetary"] == 12.5
    assert prof["consent"]["email"]["opted_in"] is True and prof["events"][0]["event_id"] == "p1"
    out = await asyncio.to_thread(run_module, "clients", "profile", "--server", target, "--user", "u9",
                                  check=False)
    assert out.returncode == 1  # NOT_FOUND


def listed_campaigns(target: str) -> tuple[list[str], list[str]]:
    with TailorClient(target, timeout=10) as client:
        for cid in ("l2", "l0", "l1"):
            client.create_campaign({"campaign_id": cid, "policy": "fixed", "variants": [{"id": "a"}]})
        client.archive_campaign("l1")
        live = [c.spec["campaign_id"] for c in client.list_campaigns(page_size=1)]
        every = [c.spec["campaign_id"] for c in client.list_campaigns(include_archived=True)]
    return live, every


async def test_list_campaigns_follows_the_pages(target):
    from tests.conftest import run_module
    live, every = await asyncio.to_thread(listed_campaigns, target)
    assert [c for c in live if c.startswith("l")] == ["l0", "l2"]
    assert [c for c in every if c.startswith("l")] == ["l0", "l1", "l2"] and every == sorted(every)
    out = await asyncio.to_thread(run_module, "clients", "campaign", "list", "--archived",
                                  "--server", target)
    printed = json.loads(out.stdout)["campaigns"]
    assert [c["spec"]["campaign_id"] for c in printed] == every
    assert [c["archived"] for c in printed if c["spec"]["campaign_id"] == "l1"] == [True]


def test_the_asyncio_client_sends_a_recommend_context_as_the_blocking_one_does():
    """`AsyncTailorClient.recommend` took no `context` (TypeError): an asyncio caller could not
    send the request context the impression log keeps and context features read."""
    from concurrent import futures

    import grpc

    from clients.aio import AsyncTailorClient
    from protos.tailor.v1 import recommendation_pb2 as pb
    from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc

    class Recording(pb_grpc.RecommendationServiceServicer):
        contexts: list[dict] = []

        def Recommend(self, request, context):
            self.contexts.append(dict(request.context))
            return pb.RecommendResponse(model_version="v")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_RecommendationServiceServicer_to_server(Recording(), server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()

    async def recommend():
        async with AsyncTailorClient(target, timeout=10) as client:
            return await client.recommend("u1", 3, context={"page": "cart"})
    try:
        with TailorClient(target, timeout=10) as client:
            client.recommend("u1", 3, context={"page": "cart"})
        assert asyncio.run(recommend()).model_version == "v"
    finally:
        server.stop(None)
    assert Recording.contexts == [{"page": "cart"}] * 2


def _quiet_now() -> dict:
    """Quiet hours (UTC, the users' zone) from an hour before now to an hour after."""
    from datetime import UTC, datetime, timedelta
    now = datetime.now(UTC)
    return {"start": (now - timedelta(hours=1)).strftime("%H:%M"),
            "end": (now + timedelta(hours=1)).strftime("%H:%M")}


def verdicts(target: str):
    with TailorClient(target, timeout=10) as client:
        client.create_campaign({"campaign_id": "q1", "channel": "email", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"subject": "hi"}}],
                                "quiet_hours": _quiet_now()})
        client.upsert_attributes("in", {"email": "in@example.org", "timezone": "UTC"})
        client.set_consent("in", "email", True, "form")
        client.upsert_attributes("out", {"email": "out@example.org", "timezone": "UTC"})
        return client.choose_variant("q1", "in"), client.choose_variant("q1", "out")


async def test_a_choice_says_when_where_and_whether_to_send(target):
    """Choice kept neither `send_at`, `channel`, `suppressed` nor `reason`: a caller sending
    what `choose_variant` chose mailed at once a user in their quiet hours (the server said to
    wait until their end), on whatever channel it guessed, and could not tell a user without
    consent (`no_consent`) from one its policy left out."""
    deferred, refused = await asyncio.to_thread(verdicts, target)
    assert (deferred.variant_id, deferred.channel, deferred.suppressed) == ("a", "email", False)
    assert deferred.send_at > time.time() + 1800 and deferred.reason == ""
    assert (refused.variant_id, refused.arm, refused.suppressed, refused.reason) == \
        ("", -2, True, "no_consent")
    out = json.loads((await asyncio.to_thread(run_module, "clients", "campaign", "choose",
                                              "--campaign", "q1", "--user", "in",
                                              "--server", target)).stdout)
    assert out["channel"] == "email" and out["send_at"] > time.time() + 1800


def fetched_campaign(target: str):
    with TailorClient(target, timeout=10) as client:
        client.create_campaign({"campaign_id": "g1", "policy": "fixed", "variants": [{"id": "a"}]})
        client.update_campaign({"campaign_id": "g1", "policy": "fixed", "name": "Spring",
                                "variants": [{"id": "a"}, {"id": "b"}]})
        return client.get_campaign("g1")


async def test_get_campaign_reads_one_campaign(target):
    """GetCampaign, a documented RPC, had no client method nor CLI command: reading back the
    campaign just created meant paging through `campaign list`."""
    from clients import Campaign
    got = await asyncio.to_thread(fetched_campaign, target)
    assert isinstance(got, Campaign) and got.revision == 2 and got.spec["name"] == "Spring"
    assert [v["id"] for v in got.spec["variants"]] == ["a", "b"]
    out = json.loads((await asyncio.to_thread(run_module, "clients", "campaign", "get",
                                              "--campaign", "g1", "--server", target)).stdout)
    assert out["revision"] == 2 and out["spec"]["campaign_id"] == "g1"
    missing = await asyncio.to_thread(run_module, "clients", "campaign", "get", "--campaign",
                                      "nope", "--server", target, check=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_a_bundles_metrics_come_in_name_order():
    # `status` printed the manifest's 34 figures in the protobuf map's order, model.ndcg@10
    # between popularity.coverage and retrieval.map@10: unreadable side by side
    from clients.results import LoadedBundle
    from protos.tailor.v1 import model_admin_pb2 as admin_pb

    names = [f"{m}.{k}@{n}" for m in ("retrieval", "popularity", "model")
             for k in ("recall", "ndcg") for n in (10, 5, 3, 1)]
    msg = admin_pb.LoadedBundle(version="v", metrics={name: 0.1 for name in names})
    assert list(LoadedBundle.from_pb(msg).metrics) == sorted(names)
