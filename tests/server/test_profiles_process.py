"""Profiles against `python -m server` processes: crash durability, several workers writing,
the full-map error, the CLI, and the export → train loop."""
import asyncio
import json
import threading
import time

import grpc
import pytest

from clients import TailorClient, TailorError
from tests.conftest import run_module, server_settings, serving


def events(prefix, n, users=50, t0=None):
    t0 = time.time() - 3600 if t0 is None else t0
    return [{"event_id": f"{prefix}-{i}", "user_id": f"{i % users}", "type": "click",
             "item_id": f"{i % 97}", "timestamp": t0 + i * 0.01} for i in range(n)]


def count_events(client):
    return sum(1 for _ in client.export_events())


def test_acknowledged_events_survive_kill_9(server_process, tmp_path, demo_bundle):
    data = tmp_path / "data"
    server = server_process(data, bundle=demo_bundle,
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    with TailorClient(server.target, timeout=30) as client:
        for b in range(5):
            reply = client.track_batch(events(f"k{b}", 400))
            assert reply.accepted == 400
    server.kill()  # no shutdown, no flush: only what LMDB committed survives
    assert asyncio.run(_read_back(tmp_path)) == (2000, 40)


async def _read_back(tmp_path) -> tuple[int, int]:
    """(events exported, user 3's n_events) of a server in this process on the killed one's
    data dir and secrets: what LMDB kept is read, not how a process starts (a second
    `python -m server` here cost ~2-3 s of CPU)."""
    from protos.tailor.v1 import profile_pb2 as pb
    from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
    async with serving(server_settings(tmp_path, None)) as (_, ch):
        stub = pb_grpc.ProfileServiceStub(ch)
        exported = len([e async for e in stub.ExportEvents(pb.ExportEventsRequest())])
        profile = await stub.GetProfile(pb.GetProfileRequest(user_id="3"))
        return exported, profile.features.n_events


def test_writes_from_several_workers_all_land(server_process, tmp_path, demo_bundle):
    server = server_process(tmp_path / "data", bundle=demo_bundle, workers=2)
    errors = []

    def writer(w):
        try:  # one channel per writer: connections spread over the worker processes
            with TailorClient(server.target, timeout=60) as client:
                for b in range(10):
                    assert client.track_batch(events(f"w{w}-b{b}", 200)).accepted == 200
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with TailorClient(server.target, timeout=60) as client:
        assert count_events(client) == 6 * 10 * 200
        seen = {client.get_profile(str(u)).features.n_events for u in range(50)}
        assert seen == {6 * 10 * 200 // 50}


def test_full_store_answers_resource_exhausted_and_keeps_accepted_events(server_process, tmp_path):
    env = {"TAILOR_LMDB_MAP_SIZE": str(1 << 20), "TAILOR_LMDB_MAX_MAP_SIZE": str(4 << 20)}
    server = server_process(tmp_path / "data", env=env)
    big = {"note": "x" * 900}
    accepted = 0
    with TailorClient(server.target, timeout=30) as client:
        with pytest.raises(TailorError) as err:
            for b in range(200):
                batch = [dict(e, attributes=big) for e in events(f"f{b}", 100)]
                accepted += client.track_batch(batch).accepted
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "full" in str(err.value)
        assert accepted > 0 and count_events(client) == accepted
        client.ping()  # still serving


def test_cli_track_profile_consent_delete(server_process, tmp_path):
    server = server_process(tmp_path / "data")
    lines = tmp_path / "events.jsonl"
    # an ISO 8601 time, three days back: inside the retention window whatever the date
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86400))
    lines.write_text("\n".join(json.dumps(e) for e in events("cli", 30, users=3) + [
        {"event_id": "cli-ts", "user_id": "0", "type": "purchase", "value": 12.5, "timestamp": iso},
        {"event_id": "cli-bad", "user_id": "0", "type": "warp", "timestamp": time.time()}]))
    out = json.loads(run_module("clients", "track", "--server", server.target, str(lines)).stdout)
    assert (out["accepted"], out["rejected"]) == (31, 1)
    prof = json.loads(run_module("clients", "profile", "--server", server.target, "--user", "0").stdout)
    assert prof["features"]["monetary"] == 12.5 and len(prof["events"]) == 11
    run_module("clients", "consent", "--server", server.target, "--user", "0", "--channel", "sms",
               "--state", "out")
    prof = json.loads(run_module("clients", "profile", "--server", server.target, "--user", "0").stdout)
    assert prof["consent"]["sms"]["opted_in"] is False
    out = json.loads(run_module("clients", "delete", "--server", server.target, "--user", "0").stdout)
    assert int(out["records_deleted"]) >= 11 and abs(out["erased_at"] - time.time()) < 60
    gone = run_module("clients", "profile", "--server", server.target, "--user", "0", check=False)
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr


def test_export_closes_the_loop_into_training(server_process, tmp_path, demo_data):
    server = server_process(tmp_path / "data")
    with TailorClient(server.target, timeout=60) as client:
        client.track(events("loop", 3000, users=120))
    out = tmp_path / "exported" / "interactions.csv"
    run_module("training", "export", "--server", server.target, "--out", str(out))
    rows = out.read_text().splitlines()
    assert rows[0] == "user_id,item_id,timestamp,event,value,channel" and len(rows) == 3001
    bundles = tmp_path / "bundles"
    run_module("training", "train", "--interactions", str(out), "--items", str(demo_data / "items.csv"),
               "--out", str(bundles))
    assert list(bundles.glob("*/manifest.json"))
