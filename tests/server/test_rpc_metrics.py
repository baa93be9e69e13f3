"""/metrics of a real 2-worker `python -m server`: every RPC, unary and streaming, counted under the
go-grpc-prometheus names and summed over the workers; the domain series the dashboard queries."""
import re
import time
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from tests.conftest import ROOT
from tests.test_deploy_files import queried_metrics

PROFILE = "tailor.v1.ProfileService"
LATER = {"tailor_drift_psi", "tailor_model_impressions", "tailor_model_ctr",
         "tailor_model_conversion_rate", "tailor_model_revenue_per_mille"}
"""Documented series a periodic pass writes, per model version (docs/operations.md says when)."""


def documented_metrics() -> set[str]:
    """The metric names of docs/operations.md's metrics table."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("Metrics (`server/metrics.py`", 1)[1].split("\n\n", 2)[1]
    return {name for row in table.splitlines() if row.startswith("| `")
            for name in re.findall(r"`((?:tailor|grpc)_[a-z_]+)`", row.split(" | ")[0])}


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    """The sum of `name` over every sample whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def event(i: int, user: str, type_: str = "view") -> pb.Event:
    return pb.Event(event_id=f"m-{i}", user_id=user, type=type_, item_id="", timestamp=time.time() - 60)


def calls(target: str) -> dict:
    """Unary and streaming calls over two connections (the two workers may both serve some);
    returns what each should count."""
    with grpc.insecure_channel(target) as one, grpc.insecure_channel(target) as two:
        for ch in (one, two):
            rpb_grpc.RecommendationServiceStub(ch).Recommend(rpb.RecommendRequest(user_id="u1", k=3))
        profiles = pb_grpc.ProfileServiceStub(one)
        reply = profiles.TrackEvents(pb.TrackEventsRequest(events=[
            event(0, "a"), event(1, "a"), event(2, "a", "teleport")]))
        assert reply.accepted == 2 and len(reply.rejected) == 1
        batches = [pb.TrackEventsRequest(events=[event(10 + 2 * b + j, "b", "click") for j in range(2)])
                   for b in range(3)]
        assert pb_grpc.ProfileServiceStub(two).TrackEventStream(iter(batches)).accepted == 6
        exported = list(profiles.ExportEvents(pb.ExportEventsRequest()))
        assert len(exported) == 8
        try:
            profiles.GetProfile(pb.GetProfileRequest(user_id="nobody-here"))
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
        campaigns = cpb_grpc.CampaignServiceStub(two)
        campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id="c1", channel="email", policy="bernoulli_ts",
            variants=[cpb.Variant(id="v0"), cpb.Variant(id="v1")])))
        for user in ("x", "y", "z"):
            campaigns.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="c1", user_id=user))
    return {"exported": len(exported)}


def test_metrics_count_unary_and_streaming_rpcs_over_two_workers(server_process, demo_bundle,
                                                                 demo_manifest):
    server = server_process(bundle=demo_bundle, workers=2)
    expected = calls(server.target)
    time.sleep(0.2)  # the store gauges are set at start; nothing else is deferred
    m = scrape(server.metrics_port)

    def handled(method, code="OK", service=PROFILE):
        return value(m, "grpc_server_handled_total", grpc_service=service, grpc_method=method,
                     grpc_code=code)

    rec = {"grpc_service": "tailor.v1.RecommendationService", "grpc_method": "Recommend"}
    assert handled("Recommend", service=rec["grpc_service"]) == 2
    assert value(m, "grpc_server_handling_seconds_count", **rec) == 2
    assert value(m, "grpc_server_started_total", grpc_type="unary", **rec) == 2
    assert handled("TrackEvents") == 1 and handled("TrackEventStream") == 1
    stream = {"grpc_service": PROFILE, "grpc_method": "TrackEventStream"}
    assert value(m, "grpc_server_started_total", grpc_type="client_stream", **stream) == 1
    assert value(m, "grpc_server_msg_received_total", **stream) == 3
    assert value(m, "grpc_server_msg_sent_total", **stream) == 1
    export = {"grpc_service": PROFILE, "grpc_method": "ExportEvents", "grpc_type": "server_stream"}
    assert value(m, "grpc_server_msg_sent_total", **export) == expected["exported"] == 8
    assert value(m, "grpc_server_msg_received_total", **export) == 1
    assert handled("GetProfile", "NOT_FOUND") == 1 and handled("GetProfile") == 0
    for name in ("grpc_server_started_total", "grpc_server_handling_seconds_count"):
        assert value(m, name) == value(m, "grpc_server_handled_total")  # nothing still running

    assert value(m, "tailor_events_total", type="view", outcome="accepted") == 2
    assert value(m, "tailor_events_total", type="click", outcome="accepted") == 6
    assert value(m, "tailor_events_total", type="other", outcome="rejected") == 1
    assert value(m, "tailor_campaign_decisions_total", campaign="c1") == 3
    assert value(m, "tailor_model_info", version=demo_manifest["version"],
                 format=demo_manifest["format"]) == 1
    assert value(m, "tailor_store_max_map_bytes") == 1 << 40
    assert 0 < value(m, "tailor_store_used_bytes") <= value(m, "tailor_store_map_bytes")

    names = {name for name, _ in m}
    assert not [n for n in names if n.endswith("_created")]
    assert queried_metrics() <= names, "the dashboard or alerts query a metric not exported"
    families = names | {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
    documented = documented_metrics()
    assert len(documented) > 20 and "tailor_impression_joins_total" in documented
    assert documented - LATER - families == set(), "documented but not in the scrape"


def test_a_multiprocess_dir_in_the_environment_does_not_bring_back_an_earlier_servers_figures(
        server_process, tmp_path):
    """`PROMETHEUS_MULTIPROC_DIR` set where the server starts (a unit file or shell following
    prometheus-client's docs) made a one-process server keep its samples in that directory and
    serve every file there: counters and gauges of servers that ran before on other data dirs
    included (8 accepted events where this one had 3; a store gauge stuck at an old maximum).
    The server owns the variable: a one-process server counts in memory, a parent of workers
    makes its own directory."""
    from clients import TailorClient
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "pmd"),
           "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    (tmp_path / "pmd").mkdir()
    for data, n in (("one", 5), ("two", 3)):
        served = server_process(tmp_path / data, env=env)
        t0 = time.time() - 60
        with TailorClient(served.target, timeout=30) as client:
            assert client.track_batch([{"event_id": f"{data}-{i}", "user_id": "u", "type": "click",
                                        "item_id": "1", "timestamp": t0 + i}
                                       for i in range(n)]).accepted == n
        samples = scrape(served.metrics_port)
        served.stop()
        assert value(samples, "tailor_events_total", outcome="accepted") == n, data


def test_bundle_load_failing_is_exported_from_the_start(server_process, demo_bundle):
    """The alert on `tailor_bundle_load_failing` (deploy/monitoring/alerts.yml) and the
    dashboard query it: it was set only by the bundle pointer's first poll, half a second after
    the start, so a scrape before that found no such series (a flaky test_rpc_metrics in CI)."""
    server = server_process(bundle=demo_bundle, env={"TAILOR_BUNDLE_POLL_SECONDS": "3600"})
    m = scrape(server.metrics_port)
    assert value(m, "tailor_bundle_load_failing", slot="active") == 0
    assert ("tailor_bundle_load_failing", frozenset({("slot", "canary")})) in m
