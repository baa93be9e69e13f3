"""A reload sent by name (`pkill -HUP -f "python -m server"`, as logrotate scripts and operators
do) reaches every process whose command line matches: the servers, which re-read their files,
and the operator commands running beside them (`backup`, `compact`, `migrate`, `restore`,
`rotate-key`), which have nothing to reload and must not die of it."""
import json
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT


def _hangup_default() -> None:
    """A child's SIGHUP as a service manager starts it (default: it terminates), not as ignored
    by the shell that runs the tests (`nohup pytest`, some CI runners): an ignored signal stays
    ignored across fork and exec, and these tests passed on code that never ignored it."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _ignores_hangup(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        mask = next(line for line in fh if line.startswith("SigIgn:")).split()[1]
    return bool(int(mask, 16) >> (signal.SIGHUP - 1) & 1)


def test_a_reload_sent_by_name_leaves_a_running_backup_to_finish(tmp_path):
    """The backup waits for a bundle rewrite (the bundles directory's lock, held here) while the
    HUP comes: on main it died of it (exit -1), leaving no archive."""
    from server.store import Store
    from server.store.lock import locked_dir
    data, out = tmp_path / "data", tmp_path / "out"
    Store(data / "store").close()
    (data / "bundles" / "v1").mkdir(parents=True)
    (data / "bundles" / "v1" / "manifest.json").write_text("{}")
    out.mkdir()
    with locked_dir(data / "bundles"):  # the backup copies the store, then waits here
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "backup", "--data-dir", str(data), "--out",
             str(out / "b.tar")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=_hangup_default)
        deadline = time.monotonic() + 60
        while not list(out.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)  # its staging dir: the store is copied, the bundles wait
        time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)  # delivered (or not) before the lock is released
    outs, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (proc.returncode, err[-3000:])
    assert json.loads(outs)["bundles"] == ["v1"]
    assert [p.name for p in out.iterdir()] == ["b.tar"]


def test_every_operator_command_ignores_a_hangup_before_it_starts_its_work(tmp_path):
    """`compact` and `restore` (and `migrate`, `rotate-key`) go through the same entry point:
    each ignores SIGHUP from the moment `python -m server` parses its command. Checked on the
    process itself, stopped where it takes the data dir's lock."""
    from server.store import Store
    data = tmp_path / "data"
    Store(data / "store").close()
    (tmp_path / "b.tar").write_bytes(b"")
    control = subprocess.Popen(  # started the same way, no command: SIGHUP not ignored
        [sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"],
        stdout=subprocess.PIPE, text=True, preexec_fn=_hangup_default)
    try:
        assert control.stdout.readline() == "up\n"
        assert not _ignores_hangup(control.pid)
    finally:
        control.kill()
        control.communicate(timeout=60)
    for argv in (["compact", "--data-dir", str(data)],
                 ["restore", "--from", str(tmp_path / "b.tar"), "--data-dir", str(tmp_path / "d2")]):
        proc = subprocess.Popen([sys.executable, "-c", _STOPPED_AT_THE_LOCK, *argv], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_hangup_default)
        try:
            line = proc.stdout.readline()
            assert line == "at the lock\n", (line, proc.stderr.read()[-3000:])
            assert _ignores_hangup(proc.pid), argv[0]
        finally:
            proc.kill()
            proc.communicate(timeout=60)


_STOPPED_AT_THE_LOCK = """
import signal, sys
import server.store
import server.store.lock


def stopped(*args, **kwargs):  # the command reached its data dir: say so, wait to be killed
    print("at the lock", flush=True)
    while True:
        signal.pause()


server.store.lock_data_dir = server.store.lock.lock_data_dir = stopped
import server.backup.copying, server.backup.restoring, server.store.compaction  # noqa: E401,E402
server.backup.copying.lock_data_dir = server.backup.restoring.lock_data_dir = stopped
server.store.compaction.lock_data_dir = stopped
from server.__main__ import main  # noqa: E402
main(sys.argv[1:])
"""
