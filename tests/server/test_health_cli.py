"""`python -m clients health`: the container health check (exit 0 only when SERVING)."""
import json

from tests.conftest import free_port, run_module


def test_health_is_serving_on_a_running_server(server_process, tmp_path):
    served = server_process(tmp_path / "data")
    out = run_module("clients", "health", "--server", served.target, "--timeout", "5")
    assert json.loads(out.stdout) == {"status": "SERVING"}
    one = run_module("clients", "health", "--server", served.target,
                     "--service", "tailor.v1.RecommendationService")
    assert json.loads(one.stdout) == {"status": "SERVING"}


def test_health_fails_without_a_server_and_for_an_unknown_service(server_process, tmp_path):
    down = run_module("clients", "health", "--server", f"127.0.0.1:{free_port()}", "--timeout", "1",
                      check=False)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    served = server_process(tmp_path / "data")
    unknown = run_module("clients", "health", "--server", served.target, "--service", "nope",
                         check=False)
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


async def test_health_fails_while_the_server_is_not_serving(tmp_path):
    import asyncio

    from server.app import TailorServer
    from server.config import Settings
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", lmdb_sync=False, grace_seconds=1.0))
    await server.start(serving=False)  # as a worker before every worker listens
    try:
        out = await asyncio.to_thread(run_module, "clients", "health", "--server",
                                      f"127.0.0.1:{server.port}", check=False)
    finally:
        await server.stop(grace=0.5)
    assert out.returncode == 1 and out.stderr == "error: NOT_SERVING: health check: not serving\n"
