"""A start that cannot load the active bundle falls back to an older one and moves the pointer,
so no load fails after it and `tailor_bundle_load_failing` is 0: the fallback is recorded in
the store and `tailor_bundle_fallback` (which TailorBundleNotLoaded includes) is 1 until a
version is chosen again. Real server processes on one data dir."""

import yaml

from clients.client import TailorClient
from tests.conftest import ROOT
from tests.server.test_rpc_metrics import scrape, value


def _fallback(served) -> float:
    return value(scrape(served.metrics_port), "tailor_bundle_fallback", slot="active")


def test_a_start_that_falls_back_from_a_damaged_active_bundle_keeps_the_alert_firing(
        server_process, demo_bundle, second_bundle, demo_manifest, tmp_path):
    data = tmp_path / "data"
    served = server_process(data, bundle=demo_bundle)
    with TailorClient(served.target, timeout=60) as client:
        damaged = client.push_bundle(second_bundle).active.version
    served.stop()
    (data / "bundles" / damaged / "index.faiss").unlink()  # the active bundle's copy damaged

    served = server_process(data)
    served.wait_logged(f"cannot serve the active bundle {damaged}")
    with TailorClient(served.target, timeout=60) as client:
        status = client.model_status()
    assert status.active.version == demo_manifest["version"]
    assert (status.fallback.from_version, status.fallback.to_version) == (
        damaged, demo_manifest["version"])  # `status` says so too, not only the metric
    assert status.fallback.at > 0
    samples = scrape(served.metrics_port)
    assert value(samples, "tailor_bundle_load_failing", slot="active") == 0  # nothing fails now
    assert value(samples, "tailor_bundle_fallback", slot="active") == 1
    served.stop()

    served = server_process(data)  # a restart loads the moved pointer: still the fallback
    assert _fallback(served) == 1
    with TailorClient(served.target, timeout=60) as client:
        assert client.push_bundle(second_bundle).active.version == damaged  # its copy replaced
        assert client.model_status().fallback is None
    assert _fallback(served) == 0
    served.stop()


def test_the_bundle_alert_includes_the_fallback():
    rules = yaml.safe_load((ROOT / "deploy" / "monitoring" / "alerts.yml").read_text())
    [expr] = [r["expr"] for g in rules["groups"] for r in g["rules"]
              if r["alert"] == "TailorBundleNotLoaded"]
    assert "tailor_bundle_load_failing" in expr and "tailor_bundle_fallback" in expr


async def test_a_fallback_record_left_by_an_older_release_is_not_reported(settings):
    """An older release knows no such record: its push or rollback moves the pointer and leaves
    the record there, and after an upgrade again the alert fired for a version chosen since.
    The record counts only while the pointer names the version the start fell back to."""
    import json

    from server.store import keys
    from tests.conftest import serving

    async with serving(settings) as (server, _):
        registry, store = server.registry, server.store
        active = registry.pointer()
        assert active and registry.fell_back() is None
        for to, reported in (("a-version-chosen-since", False), (active, True)):
            store.put("meta", keys.BUNDLE_FALLBACK,
                      json.dumps({"from": "damaged", "to": to, "at": 0.0}).encode())
            assert (registry.fell_back() is not None) is reported, to
