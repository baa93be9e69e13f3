"""A server's stop waits for the work its background passes have under way in a thread (a sweep
between two of its transactions) before the store closes: nothing fails after the stop
(`server.background`)."""
import asyncio
import logging
import threading
import time

import pytest

from server.app import TailorServer
from server.background import Background
from server.campaigns.repository import CampaignRepository
from server.profiles.repository import ProfileRepository
from tests.conftest import server_settings


def _slowed(monkeypatch, cls, name: str, started: threading.Event, ended: list) -> None:
    """`cls.name` runs in its pass's thread after a 1 s pause (a slow read), then for real."""
    real = getattr(cls, name)

    def slow(repo, *args, **kw):
        started.set()
        time.sleep(1.0)
        try:
            ended.append(real(repo, *args, **kw))
        except Exception as err:  # the store closed under it
            ended.append(repr(err))
        return ended[-1]
    monkeypatch.setattr(cls, name, slow)


@pytest.mark.parametrize("cls, name", [(ProfileRepository, "drop_events_before"),
                                       (CampaignRepository, "sweep")],
                         ids=["retention sweep", "reward window sweep"])
async def test_stop_waits_for_a_sweep_under_way_in_its_thread(cls, name, tmp_path, demo_bundle,
                                                              monkeypatch):
    started, ended = threading.Event(), []
    _slowed(monkeypatch, cls, name, started, ended)
    monkeypatch.setattr(CampaignRepository, "has_due", lambda repo, now: True)
    server = TailorServer(server_settings(tmp_path, demo_bundle))
    await server.start()  # both sweeps' first passes start at once
    assert await asyncio.to_thread(started.wait, 20), "the sweep never started"
    await server.stop(grace=0.1)
    assert ended == [0]  # the sweep ran to its end (nothing to drop), before the store closed


async def test_a_failed_pass_is_logged_and_the_next_runs(caplog):
    runs = []

    async def one_pass():
        runs.append(len(runs))
        if len(runs) == 1:
            raise ValueError("first")
    background = Background()
    background.every(0.01, one_pass, "the pass failed")
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    await background.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["the pass failed"]
    assert not background._passes


async def test_a_long_pass_under_way_does_not_hold_up_the_drain_of_calls(tmp_path, demo_bundle,
                                                                          monkeypatch):
    """The gRPC port drains (new calls refused) while the pass still runs; the stop returns once
    the pass has ended."""
    import grpc

    from protos.tailor.v1 import diagnostics_pb2 as dpb
    from protos.tailor.v1 import diagnostics_pb2_grpc
    started, ended = threading.Event(), []
    _slowed(monkeypatch, ProfileRepository, "drop_events_before", started, ended)
    server = TailorServer(server_settings(tmp_path, demo_bundle))
    await server.start()
    assert await asyncio.to_thread(started.wait, 20), "the sweep never started"
    stopping = asyncio.ensure_future(server.stop(grace=0.1))
    await asyncio.sleep(0.5)  # the sweep sleeps 1 s in its thread
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await diagnostics_pb2_grpc.DiagnosticsServiceStub(ch).Ping(dpb.PingRequest(), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended == [] and not stopping.done()
    await stopping
    assert ended == [0]
