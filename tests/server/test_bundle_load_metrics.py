"""`tailor_bundle_load_failing{slot}`, a process-wide gauge: its own module, since any other
in-process server alive beside it (test_model_admin.py shares one across its module) polls its
own store and sets the same gauge, 0 for a canary it does not run."""
import asyncio

import pytest


@pytest.fixture
def fast_poll(settings):
    settings.bundle_poll_seconds = 0.05


async def test_a_worker_that_cannot_load_what_the_store_names_says_so_in_its_metrics(
        fast_poll, tailor_server, demo_manifest):
    """A worker that cannot load the running canary's bundle served the canary's users from
    the active version with no signal an operator could watch or alert on (one WARNING a
    minute in its log; the push had returned OK). `tailor_bundle_load_failing{slot}` is 1
    while it cannot load what the store names for the slot, 0 once it serves it or the store
    names something else; the same for the active pointer."""
    from prometheus_client import REGISTRY

    from server.models.canary import CanarySplit
    from server.store.keys import BUNDLE_ACTIVE
    bad, registry = "20260101T000000-cafef00d", tailor_server.registry

    def failing() -> dict[str, float | None]:
        return {slot: REGISTRY.get_sample_value("tailor_bundle_load_failing", {"slot": slot})
                for slot in ("active", "canary")}

    registry.canaries.start(CanarySplit.new(bad, demo_manifest["version"], 0.5))
    await asyncio.sleep(0.5)
    assert failing() == {"active": 0.0, "canary": 1.0}
    registry.canaries.end(bad)
    await asyncio.sleep(0.3)
    assert failing() == {"active": 0.0, "canary": 0.0}
    tailor_server.store.put("meta", BUNDLE_ACTIVE, bad.encode())
    await asyncio.sleep(0.5)
    assert failing() == {"active": 1.0, "canary": 0.0}
    tailor_server.store.put("meta", BUNDLE_ACTIVE, demo_manifest["version"].encode())
    await asyncio.sleep(0.3)
    assert failing() == {"active": 0.0, "canary": 0.0}
    assert registry.active.version == demo_manifest["version"]
