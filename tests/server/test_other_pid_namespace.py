"""What a running process owns in a shared directory is never removed by another Tailor process
in another pid namespace sharing that directory and the hostname (the containers of one
Kubernetes pod, `docker run --network host`): a `--workers N` server's metrics dir
(`workers._metrics_dir`), a backup's staging dir (`backup.staging.sweep_leftovers`)."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, _children, free_port, run_module
from tests.server.test_shutdown import _kill_all, _metrics_dirs, _serving_workers, _two_workers

UNSHARE = shutil.which("unshare")


def _in_own_pid_namespace(tmp_path, metrics_port: int, **env) -> subprocess.Popen:
    """`python -m server --workers 2` as pid 1 of a new pid namespace (same hostname)."""
    args = [UNSHARE, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "server",
            "--port", str(free_port()), "--metrics-port", str(metrics_port), "--workers", "2",
            "--data-dir", str(tmp_path / "a")]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "a-secrets"), **env}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _tailor_samples(metrics_port: int) -> int:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(line.startswith("tailor_") for line in text.splitlines())


def _can_unshare() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare --pid (root or user namespaces)")
def test_a_start_leaves_the_metrics_dir_of_a_server_in_another_pid_namespace(tmp_path):
    """Server A runs as pid 1 of its own pid namespace; B starts beside it (same hostname, same
    temp dir). B judged A's dir by A's pid, which in B's namespace is init (started at another
    time): it removed the dir and A's /metrics served no tailor_ sample from then on. A
    parent now holds a lock on its dir for its life, and a dir is removed only once its lock
    can be taken."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    metrics_a = free_port()
    a = _in_own_pid_namespace(tmp_path, metrics_a, TMPDIR=str(scratch))
    b = None
    try:
        seen = []
        while sum("serving on" in line for line in seen) < 2:
            line = a.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        (a_dir,) = _metrics_dirs(scratch)
        assert _tailor_samples(metrics_a) > 0
        b = _two_workers(tmp_path, TMPDIR=str(scratch))
        b_workers, b_seen = _serving_workers(b)
        assert len(b_workers) == 2, "".join(b_seen)
        assert a_dir.is_dir()
        assert len(_metrics_dirs(scratch)) == 2
        assert _tailor_samples(metrics_a) > 0
        assert not any("a server that is gone" in line for line in b_seen), "".join(b_seen)
        b.terminate()
        out, _ = b.communicate(timeout=60)
        assert b.returncode == 0, out[-3000:]
        assert _metrics_dirs(scratch) == {a_dir}
    finally:
        if b is not None:
            _kill_all(b, [])
        _stop(a)
    assert not _metrics_dirs(scratch)  # A removed its own on its way out


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server (pid 1 of the namespace, the child of `unshare`), then wait; SIGKILL
    the whole session if it is still there after a minute."""
    for pid in _children(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc.communicate(timeout=30)


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare --pid (root or user namespaces)")
def test_a_backup_leaves_the_staging_dir_of_a_backup_running_in_another_pid_namespace(tmp_path):
    """Backup A runs as pid 1 of its own pid namespace, waiting for the bundles (their lock,
    held here) with its staging dir (a store copy) beside the output; backup B, into the same
    directory from another namespace, judged A's dir by its pid (init here, started at another
    time) and removed it: A failed. A backup now holds a lock on its staging dir, and a dir
    with one is removed only once that lock can be taken."""
    from server.store import Store
    from server.store.lock import locked_dir
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a", "b"):
        Store(tmp_path / name / "store").close()
        (tmp_path / name / "bundles" / "v1").mkdir(parents=True)
        (tmp_path / name / "bundles" / "v1" / "manifest.json").write_text("{}")
    with locked_dir(tmp_path / "a" / "bundles"):  # A copies the store, then waits here
        a = subprocess.Popen(
            [UNSHARE, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "server", "backup",
             "--data-dir", str(tmp_path / "a"), "--out", str(out / "a.tar")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not list(out.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.02)
            (staging,) = out.iterdir()
            time.sleep(0.3)  # its store copied (the bundles wait)
            assert a.poll() is None, a.communicate()
            run_module("server", "backup", "--data-dir", str(tmp_path / "b"), "--out",
                       str(out / "b.tar"))
            assert staging.is_dir()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(a.pid, signal.SIGKILL)
            raise
    outs, err = a.communicate(timeout=60)
    assert a.returncode == 0, (a.returncode, err[-3000:])
    assert json.loads(outs)["bundles"] == ["v1"]
    assert sorted(p.name for p in out.iterdir()) == ["a.tar", "b.tar"]
