"""A record naming its owner process by pid: after a restart (a container numbers its processes
again) the pid of a dead owner may belong to an unrelated live process. The worker registry
and upload directories must not take that process for their owner (`processes.owner_alive`).

The situation is made for real: a record written by this process (its pid and start time, as
the server writes them) is moved to the pid of a live `sleep` started later, so the pid runs
but not the process that wrote the record. The registry's wait for its workers (a push's) is
tested here too, with such entries of live lagging processes."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time

import pytest

from server.store import keys
from tests.conftest import serving


@pytest.fixture
def unrelated_pid():
    """The pid of a live process that never wrote anything (started after this one)."""
    time.sleep(0.02)  # a start time of its own (clock ticks: 10 ms)
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


async def test_a_dead_workers_entry_under_a_recycled_pid_does_not_hold_up_a_push(
        settings, second_bundle, unrelated_pid):
    new_version = json.loads((second_bundle / "manifest.json").read_text())["version"]
    async with serving(settings) as (server, _):
        registry, store = server.registry, server.store
        ours = store.get("meta", keys.worker_key(os.getpid()))  # as a worker wrote it
        store.put("meta", keys.worker_key(unrelated_pid), ours)  # that worker died; pid reused
        shutil.copytree(second_bundle, settings.bundles_dir / new_version)
        await registry.activate(new_version)
        assert registry.current().version == new_version
        assert await registry.wait_for_workers(new_version, timeout=2.0)
        assert store.get("meta", keys.worker_key(unrelated_pid)) is None
        assert store.get("meta", keys.worker_key(os.getpid())) is not None


@pytest.fixture
def lagging_pid():
    """The pid of a live process taken for a worker that never loads the new version."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


async def _activate_beside(server, settings, second_bundle, pid: int) -> tuple[str, str]:
    """Register `pid` as a live worker serving the current version (its start time matches),
    then activate the second bundle here: (old version, new version)."""
    from server.processes import process_started
    new_version = json.loads((second_bundle / "manifest.json").read_text())["version"]
    old = server.registry.current().version
    server.store.put("meta", keys.worker_key(pid), f"{old} {process_started(pid)}".encode())
    shutil.copytree(second_bundle, settings.bundles_dir / new_version)
    await server.registry.activate(new_version)
    return old, new_version


async def test_a_live_workers_entry_still_holds_up_a_push(settings, second_bundle, lagging_pid):
    """The check still waits for a worker that runs and lags (its pid and start time match)."""
    async with serving(settings) as (server, _):
        _, new_version = await _activate_beside(server, settings, second_bundle, lagging_pid)
        assert not await server.registry.wait_for_workers(new_version, timeout=0.5)
        assert server.store.get("meta", keys.worker_key(lagging_pid)) is not None


async def test_an_upload_directory_under_a_recycled_pid_is_removed_at_start(
        settings, demo_manifest, unrelated_pid):
    from server.models.staging import BundleStaging
    bundles = settings.bundles_dir
    bundles.mkdir(parents=True)
    upload = BundleStaging(bundles)  # named as this process names it
    (upload.dir / "encoder.onnx").write_bytes(b"\x00" * 1000)
    ours = f"-{os.getpid()}"
    assert upload.dir.name.startswith(".staging" + ours)
    orphan = upload.dir.with_name(upload.dir.name.replace(ours, f"-{unrelated_pid}", 1))
    upload.dir.rename(orphan)  # its server died; the pid went to another process
    live = BundleStaging(bundles)  # this process's own upload, in flight, stays
    async with serving(settings):
        names = {p.name for p in bundles.iterdir()}
    assert names == {demo_manifest["version"], live.dir.name}


async def test_a_dead_workers_canary_tally_under_a_recycled_pid_stays_counted(
        settings, second_bundle):
    """A worker killed while a canary runs leaves its last tally under `canary␟<pid>`. A
    worker that starts later with the same pid (a restarted container's) adopted the canary by
    writing an empty tally there: the dead worker's counts left the guardrails' sums."""
    from clients import TailorClient
    from protos.tailor.v1 import recommendation_pb2 as rpb
    from protos.tailor.v1 import recommendation_pb2_grpc as rgrpc
    from server.models import ModelRegistry
    from server.models.tally import Tally
    async with serving(settings) as (server, ch):
        with TailorClient(f"127.0.0.1:{server.port}", timeout=60) as client:
            status = await asyncio.to_thread(client.push_bundle, second_bundle,
                                             canary_percent=50)
        await rgrpc.RecommendationServiceStub(ch).RecommendBatch(rpb.RecommendBatchRequest(
            requests=[rpb.RecommendRequest(user_id=str(u), k=5) for u in range(40)]))
        server.canary_monitor.publish()  # its last report before it is killed
        split = server.registry.canary_record()

        def counted() -> int:
            merged = Tally.merge(server.registry.canaries.tallies(), split.id)
            return sum(c.requests for c in merged.values())
        assert split.version == status.canary.version and counted() == 40
        later = ModelRegistry(server.settings, server.store)  # the next worker, same pid
        await later.start()
        try:
            assert later.canary is not None and later.canary.split.id == split.id
            assert counted() == 40
        finally:
            await later.stop()


async def test_a_wait_for_a_version_superseded_meanwhile_ends_at_once(
        settings, second_bundle, lagging_pid):
    """Two pushes to two workers at once: each moved the pointer, the last one won, and the
    first push waited the full 60 s for a version no worker would serve, then answered OK. A
    wait now ends as soon as the pointer names another version, saying so."""
    from server.errors import FailedPrecondition
    async with serving(settings) as (server, _):
        old, new_version = await _activate_beside(server, settings, second_bundle, lagging_pid)
        waiting = asyncio.create_task(server.registry.wait_for_workers(new_version, timeout=30.0))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the lagging worker holds it up, as it should
        server.store.put("meta", keys.BUNDLE_ACTIVE, old.encode())  # another worker's rollback
        started = time.monotonic()
        with pytest.raises(FailedPrecondition) as err:
            await waiting
        assert time.monotonic() - started < 2.0
        assert f"superseded by {old}" in str(err.value)
