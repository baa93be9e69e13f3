"""Failed authentication in the audit log, against a real server: a burst without credentials
writes a bounded number of lines whose counts add up, and a new failure is still audited."""
import json

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc as dpb_grpc
from server.security import tokens
from server.security.audit import audit_files, verify_chain
from server.security.failures import peer_host

BURST = 300


@pytest_asyncio.fixture
async def secured(settings, tmp_path):
    from server.app import TailorServer
    auth = tmp_path / "auth.toml"
    token = tokens.mint(auth, "ops", ["admin"])
    server = TailorServer(settings.model_copy(update={"auth_config": auth}))
    await server.start()
    yield server, token
    await server.stop(grace=0.5)


def audit_lines(server) -> list[dict]:
    return [json.loads(line) for path in audit_files(server.settings.audit_dir)
            for line in path.read_text().splitlines()]


async def _unauthenticated(ping, metadata=()) -> None:
    with pytest.raises(grpc.RpcError) as err:
        await ping(dpb.PingRequest(), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_burst_of_failed_calls_is_collapsed_and_counted(secured):
    server, token = secured
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        ping = dpb_grpc.DiagnosticsServiceStub(ch).Ping
        for _ in range(BURST):
            await _unauthenticated(ping)
        await _unauthenticated(ping, (("authorization", "Bearer not-a-token"),))  # a new reason
        await ping(dpb.PingRequest(), metadata=(("authorization", f"Bearer {token}"),))
        failed = [e for e in audit_lines(server) if e["status"] == "UNAUTHENTICATED"]
        assert [(e["reason"], e["count"]) for e in failed] == [
            (failed[0]["reason"], 1), ("unknown bearer token", 1)]  # both audited at once
        assert failed[0]["reason"].startswith("no credentials")
        assert failed[0]["peer"] == peer_host(failed[0]["peer"]) == "ipv4:127.0.0.1"
    await server.stop(grace=0.5)  # the interval's count is written
    failed = [e for e in audit_lines(server) if e["status"] == "UNAUTHENTICATED"]
    assert len(failed) == 3 and failed[2]["method"].endswith("/Ping")
    assert sum(e["count"] for e in failed) == BURST + 1
    assert verify_chain(server.settings.audit_dir, server.secrets["audit"]).ok


@pytest.mark.parametrize("peer, host", [
    ("ipv4:10.0.0.7:53422", "ipv4:10.0.0.7"), ("ipv6:[::1]:50051", "ipv6:[::1]"),
    ("unix:/run/tailor.sock", "unix:/run/tailor.sock"), ("", "unknown")])
def test_pairs_are_per_client_address_not_per_connection(peer, host):
    assert peer_host(peer) == host


async def test_beyond_the_bound_further_peers_share_one_pair():
    from server.security.failures import OVERFLOW, FailedAuthDigest

    class Rows:
        def __init__(self):
            self.rows = []

        def record(self, principal, method, target, status, request_id, **details):
            self.rows.append(details)

    rows = Rows()
    digest = FailedAuthDigest(rows, interval=3600, max_pairs=2)
    for n in range(50):
        await digest.failed(f"ipv4:10.0.0.{n}:1", "/m", "no credentials", "")
    await digest.close()
    assert len(digest._pairs) == 0 and len(rows.rows) == 4
    assert [r["peer"] for r in rows.rows] == ["ipv4:10.0.0.0", "ipv4:10.0.0.1", OVERFLOW[0],
                                              OVERFLOW[0]]
    assert sum(r["count"] for r in rows.rows) == 50


async def test_failures_that_come_while_a_flush_writes_are_written_without_a_new_pair():
    """A steady stream from one client: the interval's timer runs on, so every failure reaches
    the log within an interval or two, not only when another client fails or the server stops."""
    import asyncio
    import time

    from server.security.failures import FailedAuthDigest

    class SlowRows:
        def __init__(self):
            self.counts = []

        async def record(self, principal, method, target, status, request_id, **details):
            await asyncio.sleep(0.01)  # the file's I/O: failures arrive meanwhile
            self.counts.append(details["count"])

    rows = SlowRows()
    digest = FailedAuthDigest(rows, interval=0.05, max_pairs=8)
    sent, end = 0, time.monotonic() + 0.4
    while time.monotonic() < end:
        await digest.failed("ipv4:10.0.0.9:4", "/m", "no credentials", "")
        sent += 1
        await asyncio.sleep(0.002)
    deadline = time.monotonic() + 2.0
    while sum(rows.counts) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert sum(rows.counts) == sent and len(rows.counts) < sent / 4
    await digest.close()


async def test_a_stop_during_an_intervals_flush_loses_no_count():
    """`close()` (server stop) cancelled the interval's timer; when that timer was part-way
    through writing the interval's count lines, the pairs not yet written were gone."""
    import asyncio

    from server.security.failures import FailedAuthDigest

    class SlowRows:
        def __init__(self):
            self.counts = []

        async def record(self, principal, method, target, status, request_id, **details):
            if request_id != "first":
                await asyncio.sleep(0.05)  # the file's I/O, for the interval's count lines
            self.counts.append((details["peer"], details["count"]))

    rows = SlowRows()
    digest = FailedAuthDigest(rows, interval=0.2, max_pairs=8)
    for n in range(4):
        for _ in range(3):
            await digest.failed(f"ipv4:10.0.0.{n}:1", "/m", "no credentials", "first")
    await asyncio.sleep(0.2 + 0.05 * 1.5)  # the interval ended; its flush wrote one pair of 4
    await digest.close()
    assert sorted(rows.counts) == sorted([(f"ipv4:10.0.0.{n}", 1) for n in range(4)]
                                         + [(f"ipv4:10.0.0.{n}", 2) for n in range(4)])
