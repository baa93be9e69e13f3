"""bench_profiles' ingestion CPU is the ingestion's: the server's start-up work (its first
retention pass walks every stored event) is over before the CPU is read."""
import argparse
import time

from loadtests import bench_profiles
from loadtests.bench import Secured
from loadtests.measure import idle_cpu

EXPIRED = 400 * 86400  # older than the default 365 days of event retention


def populate_expired(data_dir, profiles: int, secrets_dir) -> None:
    """`bench_profiles.populate`, but every event past retention: the server's first retention
    pass, right after it starts, deletes them all."""
    from server.profiles import ProfileSchema
    from server.profiles.events import TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.security.secrets import Secrets
    from server.store import Store
    from server.store.crypto import StoreCrypto
    crypto = StoreCrypto.from_secrets(Secrets.load(secrets_dir, generate=True), encrypt=True)
    store = Store(data_dir / "store", map_size=1 << 30, sync=False, crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    old = time.time() - EXPIRED
    evs = [TrackedEvent(f"p{u}-{j}", f"u{u}", "view", "web", "", str(u), 0.0, old - j, {})
           for u in range(profiles) for j in range(5)]
    repo.ingest(evs, [None] * len(evs))
    store.sync()
    store.close()


def test_the_ingestion_server_is_idle_before_its_cpu_is_read(tmp_path):
    """`ingest` and `ingest_interleaved` read the server's CPU as soon as `ingest_server`
    returns; the first retention pass over a stored copy (every stored event walked: 5 million
    at the default --profiles) ran inside the ingestion's window."""
    args = argparse.Namespace(work=tmp_path, secrets=tmp_path / "secrets", ingest_into="stored",
                              profiles=60_000, workers=1, server_src=None, secure=Secured())
    populate_expired(tmp_path / "ingest-base-60000-on", args.profiles, args.secrets)
    proc, _ = bench_profiles.ingest_server(args, sync=False, encrypt=True)
    try:
        # deleting the 300,000 expired events takes about a core for a second here
        assert idle_cpu(proc.pid, 0.5) < 0.1
    finally:
        proc.terminate()
        proc.wait(timeout=60)
