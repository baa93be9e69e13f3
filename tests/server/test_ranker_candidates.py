"""A bundle is served with the candidate count its ranker was trained on (its manifest's
`params.ranker.n_candidates`) unless the operator sets `ranker_candidates` (real servers)."""
import asyncio
import json

import grpc
import pytest

from clients import TailorClient, TailorError
from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from tests.conftest import run_module, server_settings, serving

USERS = [str(u) for u in range(0, 300, 3)]


def _with_candidates(copy_bundle, demo_bundle, n) -> object:
    bundle = copy_bundle(demo_bundle)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["params"]["ranker"]["n_candidates"] = n
    manifest["version"] = f"candidates-{n}"
    path.write_text(json.dumps(manifest))
    return bundle


async def _answers(tmp, bundle, override: int | None) -> list[list[str]]:
    settings = server_settings(tmp, bundle)
    settings.ranker_candidates = override
    async with serving(settings) as (_, channel):
        stub = pb_grpc.RecommendationServiceStub(channel)
        replies = [await stub.Recommend(pb.RecommendRequest(user_id=u, k=10)) for u in USERS]
    return [[i.item_id for i in r.items] for r in replies]


async def test_a_bundle_is_served_with_its_trained_candidate_count_unless_overridden(
        tmp_path, copy_bundle, demo_bundle):
    """Before: every bundle was served with the server's 100 whatever it was trained with
    (`train --candidates 20`: a ranker evaluated on 20 retrieval candidates re-scored 100)."""
    bundle = _with_candidates(copy_bundle, demo_bundle, 20)
    trained = await _answers(tmp_path / "a", bundle, None)
    assert trained == await _answers(tmp_path / "b", bundle, 20)
    overridden = await _answers(tmp_path / "c", bundle, 100)
    assert trained != overridden  # the count changes answers here: the test can tell
    assert overridden == await _answers(tmp_path / "d", demo_bundle, None)  # trained with 100


@pytest.mark.parametrize("n", [0, 10_001, "20", 2.5, True])
async def test_a_trained_candidate_count_out_of_bounds_is_refused(
        tailor_server, copy_bundle, demo_bundle, n):
    bundle = _with_candidates(copy_bundle, demo_bundle, n)
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
        with pytest.raises(TailorError) as err:
            await asyncio.to_thread(client.push_bundle, bundle)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "params.ranker.n_candidates" in str(err.value) and "[1, 10000]" in str(err.value)


def test_the_servers_count_is_bounded():
    from pydantic import ValidationError

    from server.config import Settings
    with pytest.raises(ValidationError, match="ranker_candidates"):
        Settings(ranker_candidates=10_001)
    with pytest.raises(ValidationError, match="ranker_candidates"):
        Settings(ranker_candidates=0)


@pytest.fixture
def count_of_100(settings):
    settings.ranker_candidates = 100


async def test_a_count_the_server_sets_serves_a_bundle_trained_past_the_bound(
        count_of_100, tailor_server, copy_bundle, demo_bundle):
    """docs/operations.md: set TAILOR_RANKER_CANDIDATES to serve every bundle with one count,
    as before. A bundle trained with `--candidates 20000` (training takes it; served at 100
    before the per-bundle count) was refused even so, its count unused."""
    bundle = _with_candidates(copy_bundle, demo_bundle, 20_000)
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
        status = await asyncio.to_thread(client.push_bundle, bundle)
        assert status.active.version == "candidates-20000"
        assert status.active.ranker_candidates == 100  # the server's count, not the trained one
        assert len((await asyncio.to_thread(client.recommend, USERS[0], 10)).items) == 10


async def test_model_status_names_the_count_each_loaded_bundle_is_served_with(
        tailor_server, copy_bundle, demo_bundle, demo_manifest):
    """GetModelStatus (and the CLI's `status`) named no candidate count: an operator could not
    tell that a canary trained with `--candidates 20` re-scores 20 candidates a request beside
    the active bundle's trained count."""
    trained = demo_manifest["params"]["ranker"].get("n_candidates", 100)
    canary = _with_candidates(copy_bundle, demo_bundle, 20)
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as client:
        pushed = await asyncio.to_thread(client.push_bundle, canary, canary_percent=20)
    assert (pushed.active.ranker_candidates, pushed.canary.ranker_candidates) == (trained, 20)
    shown = json.loads((await asyncio.to_thread(
        run_module, "clients", "status", "--server", f"127.0.0.1:{tailor_server.port}",
        timeout=120)).stdout)
    assert shown["active"]["version"] == demo_manifest["version"]
    assert (shown["active"]["ranker_candidates"], shown["canary"]["ranker_candidates"]) == (
        trained, 20)
