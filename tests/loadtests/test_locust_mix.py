"""The mixed-workload locustfile against a real server: it passes loose SLOs and fails an
impossible one (exit code), and every method of the mix is called."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

LOCUST = [sys.executable, "-m", "locust", "-f", "loadtests/locust_mix.py", "--headless",
          "-u", "4", "-r", "4", "-t", "4s", "--only-summary", "--stop-timeout", "2",
          "--user-count", "1500", "--item-count", "600", "--compose-users", "20", "--batch", "5"]


@pytest.fixture
def server(server_process, demo_bundle, tmp_path):
    return server_process(bundle=demo_bundle, args=("--public-url", "https://loadtest.example"))


def run(server, *args):
    return subprocess.run([*LOCUST, "--host", server.target, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_loose_slos_pass_and_every_method_is_called(server):
    proc = run(server, "--slo", "*=5000")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for method in ("Recommend", "ChooseVariant", "TrackEvents", "GetProfile", "ComposeMessage"):
        assert f"/{method}" in out, f"{method} never called:\n{out[-4000:]}"
    import grpc

    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
    with grpc.insecure_channel(server.target) as ch:  # the mix measures real decisions
        decisions = list(cgrpc.CampaignServiceStub(ch).ExportDecisions(cpb.ExportDecisionsRequest(
            include_pending=True, include_suppressed=True), timeout=60))
    refused = [d.reason for d in decisions  # "withdrawn": a call in flight at the stop
               if d.status == "suppressed" and d.reason != "withdrawn"]
    assert len(decisions) > 20 and refused == [], (len(decisions), refused[:5])


def test_an_impossible_slo_fails_the_run(server):
    proc = run(server, "--slo", "*=5000,Recommend=0.001")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert "SLO missed: Recommend" in out
    assert "SLO missed: GetProfile" not in out


def test_a_second_run_against_the_same_server_finds_its_campaign(server):
    """The setup creates the campaign "unless it exists": the server says so with
    FAILED_PRECONDITION, which the setup took for a failure (a traceback at test start, the
    opt-ins skipped, the run failed)."""
    for _ in range(2):
        proc = run(server, "--slo", "*=5000")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "Uncaught exception" not in out, out[-4000:]


def test_the_mix_defaults_to_the_demo_worlds_users_and_items():
    """Against `make serve`'s demo bundle, the mix's events name items it serves: the default
    --item-count was 20,000 over a catalog of 5,000, so three events in four named an item no
    bundle knew: not the events whose ingestion an SRE sizes for."""
    from training.demo import DemoConfig
    code = ("from locust.argument_parser import get_parser; import loadtests.locust_mix; "
            "o = get_parser().parse_args(['-f', 'loadtests/locust_mix.py']); "
            "print(o.user_count, o.item_count)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    demo = DemoConfig()
    assert out == [str(demo.n_users), str(demo.n_items)]
