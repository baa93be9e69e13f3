"""A serving worker imports what the campaign statistics need in a thread (`server.preload`),
not in the first GetCampaignStats (a real `python -m server`, its modules and collections
recorded by `loadtests/gcstats`)."""
import json
import os
import time
from pathlib import Path

from clients import TailorClient
from tests.conftest import ROOT

PRELOADED = "preloaded scipy.stats"


def _stats_calls(target: str) -> list[float]:
    """Seconds of the first GetCampaignStats of a bandit campaign and of a fixed split."""
    took = []
    with TailorClient(target, timeout=60) as client:
        for cid, policy in (("bandit", "bernoulli_ts"), ("split", "fixed")):
            client.create_campaign({"campaign_id": cid, "policy": policy,
                                    "variants": [{"id": "a"}, {"id": "b"}]})
            for i in range(10):
                client.choose_variant(cid, f"u{i}")
            start = time.perf_counter()
            client.campaign_stats(cid)
            took.append(time.perf_counter() - start)
    return took


def test_the_first_campaign_stats_import_nothing_the_worker_has_not_frozen(
        server_process, tmp_path):
    """Before: the first GetCampaignStats of each worker imported scipy.stats (0.8-1.8 s that
    call, then 4-16 ms), and its ~800 modules stayed out of `gc.freeze`, walked by every full
    collection after. Now they are imported, then frozen, once the worker serves."""
    prefix = tmp_path / "gc"
    env = {"TAILOR_GC_STATS": str(prefix), "TAILOR_PRELOAD_STATISTICS": "true",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "loadtests" / "gcstats"), str(ROOT)])}
    served = server_process(env=env)
    try:
        served.wait_logged(PRELOADED, timeout=30)
    except AssertionError:
        pass  # the figures below say what went wrong
    took = _stats_calls(served.target)
    log = served.stop()
    late = json.loads(Path(f"{prefix}.{served.proc.pid}.json").read_text())["late_modules"]
    assert [m for m in late if m.startswith("scipy")] == [], (took, log[-2000:])
    assert PRELOADED in log


def test_preloading_can_be_turned_off(server_process, tmp_path):
    served = server_process(env={"TAILOR_PRELOAD_STATISTICS": "false"})
    _stats_calls(served.target)
    assert PRELOADED not in served.stop()
