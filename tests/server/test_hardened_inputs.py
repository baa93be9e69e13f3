"""Issue 14: every field of every request is bounded; client input never yields INTERNAL or
UNKNOWN, never reaches the file system as a path, and error messages echo a short prefix only.
Each test runs against a real server: one shared by the module (tests that write use user and
event ids of their own), or a fresh one where a test changes the settings or fills the store."""
from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
import time

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message_factory import GetMessageClass

from protos.tailor.v1 import model_admin_pb2 as mpb
from protos.tailor.v1 import model_admin_pb2_grpc as mpb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import serving

MB = 1024 * 1024
_unique = itertools.count()  # ids of their own for tests that write to the shared server


@pytest.fixture(scope="module")
def tailor_server(module_server):
    """One real server for the module's tests that leave its settings alone."""
    return module_server[0]


@pytest.fixture(scope="module")
def channel(module_server):
    return module_server[1]


@pytest_asyncio.fixture
async def own_channel(settings):
    """A channel to a fresh server of its own, for tests that change `settings` first."""
    async with serving(settings) as (_, ch):
        yield ch


@pytest.fixture(scope="module")
def admin(channel):
    return mpb_grpc.ModelAdminServiceStub(channel)


@pytest.fixture(scope="module")
def profiles(channel):
    return ppb_grpc.ProfileServiceStub(channel)


def _bundle_dir_names(server) -> list[str]:
    return sorted(p.name for p in server.settings.bundles_dir.iterdir())


async def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


# -- Rollback: only version names this server published -----------------------------------------
async def test_rollback_refuses_paths_and_answers_alike_for_existing_and_missing_ones(
        admin, tailor_server, second_bundle, demo_manifest):
    answers = {}
    for target in ["/etc", "/nonexistent", str(second_bundle), "../../etc", "..", "."]:
        answers[target] = await _code(admin.Rollback(mpb.RollbackRequest(version=target)))
    codes = {code for code, _ in answers.values()}
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}, answers
    # /etc and /nonexistent are told apart by nothing but the echoed prefix.
    assert answers["/etc"][1].replace("/etc", "X") == answers["/nonexistent"][1].replace(
        "/nonexistent", "X")
    status = await admin.GetModelStatus(mpb.GetModelStatusRequest())
    assert status.active.version == demo_manifest["version"]


async def test_rollback_to_a_copied_directory_under_a_published_name_is_not_loaded(
        admin, tailor_server, second_bundle, demo_manifest, tmp_path):
    # A directory outside the bundles dir that carries the served version's name.
    elsewhere = tmp_path / "elsewhere" / demo_manifest["version"]
    shutil.copytree(second_bundle, elsewhere)
    code, _ = await _code(admin.Rollback(mpb.RollbackRequest(version=str(elsewhere))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    status = await admin.GetModelStatus(mpb.GetModelStatusRequest())
    assert status.active.dim == demo_manifest["dim"]


async def test_rollback_with_a_megabyte_version_is_invalid_and_echoes_a_prefix(admin):
    code, details = await _code(admin.Rollback(mpb.RollbackRequest(version="v" * MB)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(details) < 200


async def test_rollback_to_an_unpublished_name_is_not_found(admin):
    code, _ = await _code(admin.Rollback(mpb.RollbackRequest(version="20990101T000000-deadbeef")))
    assert code == grpc.StatusCode.NOT_FOUND


# -- ExportEvents: start/end must be finite times -----------------------------------------------
@pytest.mark.parametrize("bound", [math.nan, math.inf, -math.inf, 1e308, -1e308])
async def test_export_events_with_a_non_finite_or_huge_bound_is_invalid(profiles, bound):
    for req in (ppb.ExportEventsRequest(start=bound), ppb.ExportEventsRequest(end=bound)):
        code, details = await _code(_drain(profiles.ExportEvents(req)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bound, code, details)


async def _drain(stream):
    async for _ in stream:
        pass


async def test_export_events_with_ordinary_bounds_still_exports(profiles):
    when = time.time() - 3600  # an hour no other test of the shared server writes to
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="e1", user_id="u1", type="view", item_id="i1", timestamp=when)]))
    got = [e.event_id async for e in profiles.ExportEvents(ppb.ExportEventsRequest(
        start=when - 60, end=when + 60))]
    assert got == ["e1"]


# -- SetConsent: a finite time, a bounded source ------------------------------------------------
@pytest.mark.parametrize("change", [{"timestamp": math.nan}, {"timestamp": 1e18},
                                    {"timestamp": -5.0}, {"timestamp": math.inf},
                                    {"source": "s" * MB}])
async def test_set_consent_refuses_bad_times_and_huge_sources_and_stores_nothing(profiles, change):
    user = f"c1-{next(_unique)}"
    req = dict(user_id=user, channel="email", opted_in=True, source="form", timestamp=0.0)
    req.update(change)
    code, details = await _code(profiles.SetConsent(ppb.SetConsentRequest(**req)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 200, (code, details[:300])
    code, _ = await _code(profiles.GetProfile(ppb.GetProfileRequest(user_id=user)))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_set_consent_refuses_a_future_time_that_would_outrank_every_later_change(profiles):
    user = f"c3-{next(_unique)}"
    code, details = await _code(profiles.SetConsent(ppb.SetConsentRequest(
        user_id=user, channel="email", opted_in=False, source="form",
        timestamp=time.time() + 50 * 365 * 86400)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("timestamp: "), (
        code, details)
    # Within the events' future tolerance (clock skew) it is taken, and a change now still counts.
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email", opted_in=False,
                                                    source="form", timestamp=time.time() + 60))
    profile = await profiles.SetConsent(ppb.SetConsentRequest(
        user_id=user, channel="email", opted_in=True, source="signup",
        timestamp=time.time() + 120))
    assert profile.consent["email"].opted_in


async def test_set_consent_with_an_ordinary_request_is_stored(profiles):
    profile = await profiles.SetConsent(ppb.SetConsentRequest(
        user_id="c2", channel="email", opted_in=True, source="form", timestamp=1_700_000_000.0))
    assert profile.consent["email"].timestamp == 1_700_000_000.0


# -- UpsertAttributes and GetProfile: usable keys, a count that is not negative -----------------
@pytest.mark.parametrize("key", ["", "a\x00b", "tab\there", "del\x7f"])
async def test_upsert_attributes_refuses_empty_keys_and_control_characters(profiles, key):
    user = f"a1-{next(_unique)}"
    code, details = await _code(profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"ok": "1", key: "v"})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "attributes key" in details, (code, details)
    code, _ = await _code(profiles.GetProfile(ppb.GetProfileRequest(user_id=user)))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_get_profile_with_a_negative_max_events_is_invalid(profiles):
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id="a2", attributes={"k": "v"}))
    code, details = await _code(profiles.GetProfile(ppb.GetProfileRequest(user_id="a2", max_events=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_events" in details, (code, details)


# -- PushBundle: plain file names, usable versions, nothing unlisted kept ------------------------
def _chunks(bundle, manifest: dict | None = None, extra: dict | None = None):
    files = {p.name: p.read_bytes() for p in sorted(bundle.iterdir()) if p.is_file()}
    if manifest is not None:
        files["manifest.json"] = json.dumps(manifest).encode()
    files.update(extra or {})
    return [mpb.BundleChunk(path=name, offset=0, data=data, stage_only=True)
            for name, data in files.items()]


@pytest.mark.parametrize("path", ["a\x00b", "x" * MB, "../x", "/etc/passwd", ".hidden", "a/b",
                                  "tab\there"])
async def test_push_with_a_bad_chunk_path_is_invalid_and_leaves_nothing(
        admin, tailor_server, demo_manifest, path):
    before = _bundle_dir_names(tailor_server)
    assert demo_manifest["version"] in before
    code, details = await _code(admin.PushBundle(iter([mpb.BundleChunk(path=path, data=b"x")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 200, (code, details[:300])
    assert _bundle_dir_names(tailor_server) == before


@pytest.mark.parametrize("change", [{"version": "v\x00x"}, {"version": "v" * 300},
                                    {"version": "../escape"}, {"version": ".dot"},
                                    {"index": {"type": "flat", "search_params": {"nprobe": 8}}},
                                    {"index": {"type": "flat", "search_params": {"efSearch": 2 ** 40}}}])
async def test_push_with_a_malformed_manifest_is_a_failed_precondition(
        admin, tailor_server, demo_bundle, demo_manifest, change):
    before = _bundle_dir_names(tailor_server)
    assert demo_manifest["version"] in before
    manifest = {**demo_manifest, "version": "bad-manifest", **change}
    code, details = await _code(admin.PushBundle(iter(_chunks(demo_bundle, manifest))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and len(details) < 300, (code, details[:300])
    assert _bundle_dir_names(tailor_server) == before


@pytest.mark.parametrize("text", [b"[" * 100_000, b'{"a":' * 100_000])
async def test_push_with_a_deeply_nested_manifest_is_a_failed_precondition(
        admin, tailor_server, demo_manifest, text):
    before = _bundle_dir_names(tailor_server)
    code, details = await _code(admin.PushBundle(iter([mpb.BundleChunk(
        path="manifest.json", offset=0, data=text, stage_only=True)])))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "manifest.json" in details, (
        code, details[:300])
    assert _bundle_dir_names(tailor_server) == before


async def test_files_the_manifest_does_not_list_are_not_kept(admin, tailor_server, demo_bundle,
                                                            demo_manifest):
    manifest = {**demo_manifest, "version": "with-junk"}
    status = await admin.PushBundle(iter(_chunks(demo_bundle, manifest,
                                                 {"junk.bin": b"\x00" * (1 << 20)})))
    assert "with-junk" in status.available_versions
    stored = {p.name for p in (tailor_server.settings.bundles_dir / "with-junk").iterdir()}
    assert stored == {"manifest.json", *demo_manifest["files"]}


async def test_staging_directories_left_by_a_crash_are_removed_at_start(tmp_path, settings,
                                                                       demo_manifest):
    import os
    import subprocess
    import sys

    from server.app import TailorServer
    bundles = settings.bundles_dir
    bundles.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    leftovers = [bundles / f".staging-{dead}-abc", bundles / ".staging-0123456789abcdef"]
    for path in leftovers:
        path.mkdir()
        (path / "encoder.onnx").write_bytes(b"\x00" * 1000)
    old = time.time() - 7200
    os.utime(leftovers[1], (old, old))
    live = bundles / f".staging-{os.getpid()}-inflight"  # an upload of a live process stays
    live.mkdir()
    server = TailorServer(settings)
    await server.start()
    try:
        names = {p.name for p in bundles.iterdir()}
        assert names == {demo_manifest["version"], live.name}
    finally:
        await server.stop(grace=0.5)


# -- Error messages echo a short prefix, whatever the field -------------------------------------
async def test_a_megabyte_in_any_string_field_yields_a_short_message(channel):
    from tests.server.test_fuzz import methods
    seen = 0
    for method in methods():
        req_cls = GetMessageClass(method.input_type)
        resp_cls = GetMessageClass(method.output_type)
        path = f"/{method.containing_service.full_name}/{method.name}"
        kw = dict(request_serializer=lambda m: m.SerializeToString(),
                  response_deserializer=resp_cls.FromString)
        for req in _with_a_huge_string(req_cls):
            if method.client_streaming and method.server_streaming:
                call = _drain(channel.stream_stream(path, **kw)(iter([req]), timeout=30))
            elif method.client_streaming:
                call = channel.stream_unary(path, **kw)(iter([req]), timeout=30)
            elif method.server_streaming:
                call = _drain(channel.unary_stream(path, **kw)(req, timeout=30))
            else:
                call = channel.unary_unary(path, **kw)(req, timeout=30)
            code, details = await _code(call)
            seen += 1
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                path, code, details[:200])
            assert "Stream removed" not in details, (path, code)
            assert len(details) <= 600, (path, len(details))
    assert seen >= 40


def _with_a_huge_string(cls, depth: int = 0):
    """One request per string field (nested messages and map keys/values included) holding a
    control character and a megabyte."""
    huge = "\x01" + "y" * MB
    for field in cls.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            msg = cls()
            if value.type == value.TYPE_STRING:
                getattr(msg, field.name)[huge] = "v"
                yield msg
                msg = cls()
                getattr(msg, field.name)["k"] = huge
                yield msg
            elif value.message_type is None:
                getattr(msg, field.name)[huge] = 1
                yield msg
        elif field.message_type is not None and depth < 2:
            for inner in _with_a_huge_string(GetMessageClass(field.message_type), depth + 1):
                msg = cls()
                if field.is_repeated:
                    getattr(msg, field.name).append(inner)
                else:
                    getattr(msg, field.name).CopyFrom(inner)
                yield msg
        elif field.type == field.TYPE_STRING:
            msg = cls()
            if field.is_repeated:
                getattr(msg, field.name).append(huge)
            else:
                setattr(msg, field.name, huge)
            yield msg


# -- TrackEvents: bounded values, no control characters in ids ----------------------------------
@pytest.mark.parametrize("change", [{"type": "purchase", "value": -1e6}, {"value": 1e308},
                                    {"value": -1e308}, {"user_id": "u\x01"},
                                    {"event_id": "e\x00"}, {"item_id": "i\x7f"},
                                    {"campaign_id": "c\n"}, {"attributes": {"": "x"}},
                                    {"attributes": {"ok": "1", "k\x00": "v"}},
                                    {"attributes": {"k\x1f": "v"}}, {"timestamp": 1e300}])
async def test_track_events_rejects_out_of_bound_values_and_control_characters(profiles, change):
    n = next(_unique)
    base = dict(event_id=f"e-ok-{n}", user_id=f"tu-{n}", type="view", item_id="i1",
                timestamp=time.time() - 5)
    bad = {**base, "event_id": f"e-bad-{n}", **change}
    reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(**base),
                                                                      ppb.Event(**bad)]))
    assert reply.accepted == 1 and [r.index for r in reply.rejected] == [1], reply
    assert len(reply.rejected[0].reason) < 200


async def test_track_events_echoes_an_over_long_rejected_id_cut(profiles):
    """A rejected event's id came back whole: a megabyte id, a megabyte answer per event."""
    n = next(_unique)
    long_id = f"e-long-{n}-" + "x" * MB
    reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=long_id, user_id=f"tu-{n}", type="view", item_id="i1",
        timestamp=time.time() - 5)]))
    assert reply.accepted == 0 and [r.index for r in reply.rejected] == [0], reply.rejected[0].reason
    assert reply.rejected[0].event_id == long_id[:128]


async def test_track_events_keeps_ordinary_values(profiles):
    reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="p1", user_id="tu2", type="purchase", item_id="i1", value=129.99,
        timestamp=time.time() - 5)]))
    assert reply.accepted == 1 and not reply.rejected


# -- CreateCampaign: bounded content, so ListCampaigns keeps answering everyone -----------------
async def test_huge_campaigns_are_refused_and_list_campaigns_keeps_answering(channel):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)

    def spec(cid, n, content_bytes, **kw):
        return cpb.CampaignSpec(campaign_id=cid, name=cid, channel="email", policy="bernoulli_ts",
                                variants=[cpb.Variant(id=f"v{i}", content={"body": "b" * content_bytes})
                                          for i in range(n)], **kw)
    await stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec("ok", 3, 1000)))
    for bad in [spec("wide", 300, 60_000), spec("many", 100, 10_000),
                spec("keys", 2, 10, params={"k" * MB: 1.0})]:
        code, details = await _code(stub.CreateCampaign(cpb.CreateCampaignRequest(spec=bad)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 300, (code, details[:300])
    listed = await stub.ListCampaigns(cpb.ListCampaignsRequest())
    assert [c.spec.campaign_id for c in listed.campaigns] == ["ok"]


# -- A full store still erases ------------------------------------------------------------------
@pytest.fixture
def tiny_store(settings):
    settings.lmdb_map_size = 1 << 20
    settings.lmdb_max_map_size = 4 << 20


async def test_delete_profile_works_when_the_store_is_full(tiny_store, own_channel):
    profiles = ppb_grpc.ProfileServiceStub(own_channel)
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="full0", attributes={"email": "full0@example.org"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="full0", channel="email",
                                                    opted_in=False, source="test"))
    now, n, size = time.time(), 0, 100
    for batch in range(2000):  # fill until not even one event fits
        events = [ppb.Event(event_id=f"f{batch}-{i}", user_id=f"full{i % 20}", type="view",
                            item_id=f"item{i}", timestamp=now - 100 + batch * 1e-2 + i * 1e-5,
                            attributes={"pad": "p" * 900})
                  for i in range(size)]
        try:
            n += (await profiles.TrackEvents(ppb.TrackEventsRequest(events=events))).accepted
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            if size == 1:
                break
            size = max(size // 4, 1)
    else:
        raise AssertionError("the store never filled")
    assert n > 0
    for user in ("full0", "full1", "full2"):
        reply = await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user))
        assert reply.records_deleted > 0
        code, _ = await _code(profiles.GetProfile(ppb.GetProfileRequest(user_id=user)))
        assert code == grpc.StatusCode.NOT_FOUND
    # full0's unsubscribe is kept past the erasure, in its transaction (contact.keepout)
    kept = await profiles.CheckSuppression(ppb.SuppressionAddress(email="full0@example.org"))
    assert (kept.suppressed, kept.reason, kept.marketing_only) == (True, "unsubscribe", True)
    # What erasure freed serves ordinary writes again.
    reply = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="after", user_id="later", type="view", item_id="i1", timestamp=now)]))
    assert reply.accepted == 1


# -- Attribute: bounded work --------------------------------------------------------------------
def _heavy_markov_request(channels: int = 40, order: int = 3):
    import random

    from protos.tailor.v1 import attribution_pb2 as apb
    r = random.Random(14)
    names = [f"c{i}" for i in range(channels)]
    rows, size = [], 0
    while size < 360_000:
        row = " > ".join(r.choice(names) for _ in range(r.randint(1, 12)))
        rows.append(f"{row};{r.randint(0, 3)};0;{r.randint(0, 3)}")
        size += len(rows[-1])
    return apb.AttributeRequest(spec=apb.ModelSpec(model=apb.MARKOV, order=order),
                                channelattribution_rows=rows)


@pytest.fixture
def short_attribution_budget(settings):
    settings.limits = settings.limits.model_copy(update={"attribution_seconds": 0.5})


async def test_attribute_stops_at_its_budget_and_names_the_limit(short_attribution_budget,
                                                                  own_channel):
    from protos.tailor.v1 import attribution_pb2_grpc as apb_grpc
    stub = apb_grpc.AttributionServiceStub(own_channel)
    started = time.monotonic()
    code, details = await _code(stub.Attribute(_heavy_markov_request(), timeout=60))
    elapsed = time.monotonic() - started
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "attribution_seconds" in details, (
        code, details)
    assert elapsed < 10, elapsed


async def _nothing_computes():
    """The server runs in this process: once the calls are over, nothing computes for them (an
    abandoned computation would still be running in the window measured here)."""
    await asyncio.sleep(0.5)
    cpu = time.process_time()
    await asyncio.sleep(2.0)
    burnt = time.process_time() - cpu
    assert burnt < 0.5, f"{burnt:.1f}s of CPU spent on abandoned attributions"


async def test_attribute_stops_computing_at_the_callers_deadline(channel):
    from protos.tailor.v1 import attribution_pb2_grpc as apb_grpc
    stub = apb_grpc.AttributionServiceStub(channel)
    heavy = _heavy_markov_request()  # about 1 s of computation on a quiet 2-core machine
    for _ in range(3):  # more than the two computation slots
        code, _ = await _code(stub.Attribute(heavy, timeout=0.3))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    await _nothing_computes()


async def test_sampled_shapley_stops_computing_at_the_callers_deadline(channel):
    # Sampled RATE Shapley never looked at the deadline: 100,000 permutations over 20,000
    # four-channel paths computed for about a minute after each caller had given up.
    import random

    from protos.tailor.v1 import attribution_pb2 as apb
    from protos.tailor.v1 import attribution_pb2_grpc as apb_grpc
    stub = apb_grpc.AttributionServiceStub(channel)
    r = random.Random(4)
    heavy = apb.AttributeRequest(
        spec=apb.ModelSpec(model=apb.SHAPLEY, shapley_form=apb.RATE, shapley_samples=100_000),
        paths=[apb.Path(channels=[f"c{c}" for c in r.sample(range(200), 4)], conversions=1,
                        nulls=1) for _ in range(20_000)])
    for _ in range(3):  # more than the two computation slots
        code, _ = await _code(stub.Attribute(heavy, timeout=1.0))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    await _nothing_computes()


@pytest.mark.parametrize("bound", [math.nan, math.inf, -1e308, 1e308, -1.0])
async def test_export_decisions_with_a_bound_that_is_not_a_time_is_invalid(channel, bound):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)
    for req in (cpb.ExportDecisionsRequest(start=bound), cpb.ExportDecisionsRequest(end=bound)):
        code, _ = await _code(_drain(stub.ExportDecisions(req)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bound, code)


# -- Request context: bounded numbers (a linear policy squares them) -----------------------------
@pytest.mark.parametrize("policy", ["linucb", "lints"])
async def test_a_huge_request_context_value_is_refused_and_leaves_a_linear_campaign_working(
        channel, policy):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)
    cid = f"ctx-{policy}"
    await stub.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id=cid, channel="web", policy=policy, context_features=["request.a"],
        variants=[cpb.Variant(id="x"), cpb.Variant(id="y")])))
    for value in (1e300, -1e200, 1e154):
        code, details = await _code(stub.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id=cid, user_id="cu", context={"a": value})))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "context['a']" in details, (
            value, code, details)

        async def plan(value=value):
            yield cpb.PlanCampaignRequest(campaign_id=cid, user_ids=["pu"], context={"a": value})
        code, details = await _code(_drain(stub.PlanCampaign(plan())))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "context['a']" in details, details
    # The largest accepted value keeps the posterior finite: later decisions still choose.
    for _ in range(3):
        d = await stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id=cid, user_id="cu",
                                                              context={"a": 1e9}))
        await stub.ReportReward(cpb.ReportRewardRequest(decision_id=d.decision_id, reward=1.0))
    await asyncio.sleep(0.5)  # the rewards reach the posterior the decisions read
    d = await stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id=cid, user_id="cv",
                                                          context={"a": 1.0}))
    assert d.variant_id in ("x", "y") and 0 < d.propensity <= 1, d


async def test_send_campaign_refuses_a_huge_context_value(channel):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    from protos.tailor.v1 import messaging_pb2 as mspb
    from protos.tailor.v1 import messaging_pb2_grpc as mspb_grpc
    await cpb_grpc.CampaignServiceStub(channel).CreateCampaign(cpb.CreateCampaignRequest(
        spec=cpb.CampaignSpec(campaign_id="ctx-send", channel="email", policy="fixed",
                              variants=[cpb.Variant(id="x", content={
                                  "subject": "s", "text": "{{ unsubscribe_url }}"})])))
    code, details = await _code(mspb_grpc.MessagingServiceStub(channel).SendCampaign(
        mspb.SendCampaignRequest(campaign_id="ctx-send", user_ids=["su"], context={"a": 1e300})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "context['a']" in details, details


# -- Campaign weights: finite, and a sum that is too ----------------------------------------------
@pytest.mark.parametrize("weights,field", [((math.inf, 1.0), "variants[0].weight"),
                                           ((1.0, math.nan), "variants[1].weight"),
                                           ((1e308, 1e308), "variants.weight")])
async def test_a_fixed_split_with_weights_that_are_not_finite_is_invalid(channel, weights, field):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)
    cid = f"w-{next(_unique)}"
    spec = cpb.CampaignSpec(campaign_id=cid, channel="web", policy="fixed", variants=[
        cpb.Variant(id=f"v{i}", weight=w) for i, w in enumerate(weights)])
    code, details = await _code(stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (code, details)
    code, _ = await _code(stub.GetCampaign(cpb.GetCampaignRequest(campaign_id=cid)))
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("policy", ["bernoulli_ts", "ucb1"])
async def test_weights_on_a_policy_other_than_fixed_are_invalid(channel, policy):
    """A bandit chooses its arms itself: a weight given to one was stored and never used (the
    campaign chose as if none had been given). It is refused, naming the field."""
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)
    cid = f"w-{next(_unique)}"
    weighted = cpb.CampaignSpec(campaign_id=cid, channel="web", policy=policy, variants=[
        cpb.Variant(id="v0"), cpb.Variant(id="v1", weight=9.0)])
    code, details = await _code(stub.CreateCampaign(cpb.CreateCampaignRequest(spec=weighted)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.startswith("variants[1].weight") and "fixed" in details, details
    code, _ = await _code(stub.GetCampaign(cpb.GetCampaignRequest(campaign_id=cid)))
    assert code == grpc.StatusCode.NOT_FOUND
    plain = cpb.CampaignSpec(campaign_id=cid, channel="web", policy=policy, variants=[
        cpb.Variant(id="v0"), cpb.Variant(id="v1")])
    await stub.CreateCampaign(cpb.CreateCampaignRequest(spec=plain))
    code, details = await _code(stub.UpdateCampaign(cpb.UpdateCampaignRequest(spec=weighted)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("variants[1].weight")
    got = await stub.GetCampaign(cpb.GetCampaignRequest(campaign_id=cid))
    assert [v.weight for v in got.spec.variants] == [0.0, 0.0]


# -- Rewards: bounded numbers (Gaussian and linear posteriors square them) ------------------------
@pytest.mark.parametrize("policy", ["gaussian_ts", "linucb"])
async def test_a_huge_reward_is_refused_and_leaves_the_posterior_finite(channel, policy):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)
    cid = f"rw-{policy}"
    features = ["request.a"] if policy == "linucb" else []
    await stub.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id=cid, channel="web", policy=policy, context_features=features,
        variants=[cpb.Variant(id="x"), cpb.Variant(id="y")])))
    d = await stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id=cid, user_id="ru",
                                                          context={"a": 1.0}))
    for reward in (1e300, -1e200):
        code, details = await _code(stub.ReportReward(cpb.ReportRewardRequest(
            decision_id=d.decision_id, reward=reward)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("reward: "), (
            code, details)
    await stub.ReportReward(cpb.ReportRewardRequest(decision_id=d.decision_id, reward=1e9))
    await asyncio.sleep(0.5)  # the reward reaches the posterior the stats read
    stats = await stub.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id=cid))
    assert all(math.isfinite(v.mean) and math.isfinite(v.ci_low) for v in stats.variants), stats


@pytest.mark.parametrize("change,field", [
    ({"rewards": [{"event_type": "click", "value": 1e300}]}, "rewards[0].value"),
    ({"rewards": [{"event_type": "purchase", "use_event_value": True, "cap": 1e300}]},
     "rewards[0].cap"),
    ({"default_reward": -1e300}, "default_reward")])
async def test_a_campaign_with_huge_reward_settings_is_invalid(channel, change, field):
    from google.protobuf import json_format

    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    spec = json_format.ParseDict({"campaign_id": f"rs-{next(_unique)}", "channel": "web",
                                  "policy": "gaussian_ts", "variants": [{"id": "x"}], **change},
                                 cpb.CampaignSpec())
    code, details = await _code(cpb_grpc.CampaignServiceStub(channel).CreateCampaign(
        cpb.CreateCampaignRequest(spec=spec)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (code, details)


# -- Exports: a campaign that exists, a window that is one ----------------------------------------
async def test_export_decisions_of_an_unknown_campaign_is_not_found(channel):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    code, details = await _code(_drain(cpb_grpc.CampaignServiceStub(channel).ExportDecisions(
        cpb.ExportDecisionsRequest(campaign_id="never-created"))))
    assert code == grpc.StatusCode.NOT_FOUND and "never-created" in details, (code, details)


async def test_exports_with_an_end_before_their_start_are_invalid(channel, profiles):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    start, end = 1_700_000_100.0, 1_700_000_000.0
    calls = [profiles.ExportEvents(ppb.ExportEventsRequest(start=start, end=end)),
             cpb_grpc.CampaignServiceStub(channel).ExportDecisions(
                 cpb.ExportDecisionsRequest(start=start, end=end)),
             mpb_grpc.ModelAdminServiceStub(channel).ExportImpressions(
                 mpb.ExportImpressionsRequest(start=start, end=end))]
    for call in calls:
        code, details = await _code(_drain(call))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("end: "), (
            code, details)


@pytest.mark.parametrize("variant,field", [({"content": {"": "x"}}, "variants[0].content key"),
                                           ({"content": {"a\x00": "x"}}, "variants[0].content key"),
                                           ({"features": {"": 1.0}}, "variants[0].features key"),
                                           ({"features": {"f\x1f": 1.0}}, "variants[0].features key")])
async def test_a_variant_with_an_empty_or_control_character_key_is_invalid(channel, variant, field):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    spec = cpb.CampaignSpec(campaign_id=f"vk-{next(_unique)}", channel="web", policy="fixed",
                            variants=[cpb.Variant(id="x", **variant)])
    code, details = await _code(cpb_grpc.CampaignServiceStub(channel).CreateCampaign(
        cpb.CreateCampaignRequest(spec=spec)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (code, details)


@pytest.mark.parametrize("value", [7.0, 0.5, -1.0])
async def test_a_reward_model_other_than_0_or_1_is_invalid(channel, value):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    spec = cpb.CampaignSpec(campaign_id=f"rm-{next(_unique)}", channel="web", policy="ucb1",
                            params={"reward_model": value}, variants=[cpb.Variant(id="x")])
    code, details = await _code(cpb_grpc.CampaignServiceStub(channel).CreateCampaign(
        cpb.CreateCampaignRequest(spec=spec)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "reward_model" in details, (code, details)


@pytest.mark.parametrize("policy,params,field", [
    ("linucb", {"lam": 1e-300}, "lam"), ("lints", {"lam": 1e-300}, "lam"),
    ("gaussian_ts", {"mu0": 1e200}, "mu0"), ("gaussian_ts", {"kappa0": 1e-300}, "kappa0"),
    ("linucb", {"alpha": -1.0}, "alpha"), ("ucb1", {"c": 1e200}, "c")])
async def test_bandit_params_outside_their_numeric_range_are_invalid(channel, policy, params, field):
    """A linear campaign with lam=1e-300 was created, then answered INTERNAL ("A + lam*I is not
    positive definite") to every ChooseVariant once a reward came in."""
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    features = ["request.a"] if policy in ("linucb", "lints") else []
    spec = cpb.CampaignSpec(campaign_id=f"bp-{next(_unique)}", channel="web", policy=policy,
                            params=params, context_features=features,
                            variants=[cpb.Variant(id="x"), cpb.Variant(id="y")])
    code, details = await _code(cpb_grpc.CampaignServiceStub(channel).CreateCampaign(
        cpb.CreateCampaignRequest(spec=spec)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"params['{field}']: must be"), (
        code, details)


async def test_a_linear_campaign_with_the_smallest_lam_still_decides_after_rewards(channel):
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
    stub = cpb_grpc.CampaignServiceStub(channel)
    await stub.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="lam-min", channel="web", policy="linucb", params={"lam": 1e-6},
        context_features=["request.a"], variants=[cpb.Variant(id="x"), cpb.Variant(id="y")])))
    for i in range(4):
        d = await stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="lam-min",
                                                              user_id=f"l{i}", context={"a": 1.0}))
        await stub.ReportReward(cpb.ReportRewardRequest(decision_id=d.decision_id, reward=1.0))
    await asyncio.sleep(0.5)  # the rewards reach the posterior the decisions read
    d = await stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="lam-min", user_id="l9",
                                                          context={"a": 1.0}))
    assert d.variant_id in ("x", "y")
