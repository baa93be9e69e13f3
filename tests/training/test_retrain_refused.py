"""A refused `python -m training retrain` leaves no --work-dir behind: it made the directory
before it asked the server anything, so a run against a server with no bundle (exit 2) or one
it could not reach (exit 1) left an empty one. A real in-process server with no bundle."""
import asyncio
import os
import sys

from tests.conftest import ROOT, free_port


async def retrain(server: str, work_dir) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(  # not subprocess.run: the server shares this loop
        sys.executable, "-m", "training", "retrain", "--server", server, "--work-dir",
        str(work_dir), "--timeout", "30", cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, err.decode()


async def test_a_refused_retrain_makes_no_work_dir(module_bare_server, tmp_path):
    server, _ = module_bare_server
    code, err = await retrain(f"127.0.0.1:{server.port}", tmp_path / "w")
    assert code == 2 and "the server serves no bundle" in err, err
    assert not (tmp_path / "w").exists()
    code, err = await retrain(f"127.0.0.1:{free_port()}", tmp_path / "w2")  # nothing listens
    assert code == 1, err
    assert not (tmp_path / "w2").exists()
