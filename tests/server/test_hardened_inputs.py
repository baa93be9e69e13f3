"""Issue 14: every field of every request is bounded; client input never yields INTERNAL or
UNKNOWN, never reaches the file system as a path, and error messages echo a short prefix only.
Each test runs against a real server."""
from __future__ import annotations

import math
import shutil
import time

import grpc
import pytest

from protos.tailor.v1 import model_admin_pb2 as mpb
from protos.tailor.v1 import model_admin_pb2_grpc as mpb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc

MB = 1024 * 1024


@pytest.fixture
def admin(channel):
    return mpb_grpc.ModelAdminServiceStub(channel)


@pytest.fixture
def profiles(channel):
    return ppb_grpc.ProfileServiceStub(channel)


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
    now = time.time()
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="e1", user_id="u1", type="view", item_id="i1", timestamp=now - 5)]))
    got = [e.event_id async for e in profiles.ExportEvents(ppb.ExportEventsRequest(
        start=now - 60, end=now + 60))]
    assert got == ["e1"]


# -- SetConsent: a finite time, a bounded source ------------------------------------------------
@pytest.mark.parametrize("change", [{"timestamp": math.nan}, {"timestamp": 1e18},
                                    {"timestamp": -5.0}, {"timestamp": math.inf},
                                    {"source": "s" * MB}])
async def test_set_consent_refuses_bad_times_and_huge_sources_and_stores_nothing(profiles, change):
    req = dict(user_id="c1", channel="email", opted_in=True, source="form", timestamp=0.0)
    req.update(change)
    code, details = await _code(profiles.SetConsent(ppb.SetConsentRequest(**req)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 200, (code, details[:300])
    code, _ = await _code(profiles.GetProfile(ppb.GetProfileRequest(user_id="c1")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_set_consent_with_an_ordinary_request_is_stored(profiles):
    profile = await profiles.SetConsent(ppb.SetConsentRequest(
        user_id="c2", channel="email", opted_in=True, source="form", timestamp=1_700_000_000.0))
    assert profile.consent["email"].timestamp == 1_700_000_000.0

