"""A `python -m server restore` killed or interrupted (Ctrl-C) while it swaps the copy into the
data dir leaves a data dir every command refuses until the restore is run again, and the run
again finishes it, carrying the erasures of the store it replaces. Split from test_backup.py so
the two halves run on different workers; one backup (and a data dir restored from it, copied
per test) serves every test here. The restore killed and the server refusing to start run as
processes; the other commands run in this process (`run_command`: their refusals and the
restore run again are what is checked, not their processes)."""
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_command, run_module

_RESTORE_KILLED_AT = """
import os, sys
from pathlib import Path
import server.backup as b
calls, real = [], os.replace
def replace(src, dst):
    calls.append(dst)
    if len(calls) == int(sys.argv[3]):
        os._exit(9)  # killed here: no finally runs
    real(src, dst)
os.replace = replace
b.restore(Path(sys.argv[1]), Path(sys.argv[2]), force="--no-force" not in sys.argv)
"""


@pytest.fixture(scope="module")
def restored_then_erased(tmp_path_factory):
    """(a backup of a store holding one record, a data dir it was restored into and that then
    erased a user: a record the backup does not hold), made once for the module: its tests only
    read the backup, and each takes a copy of the data dir of its own (`_live`)."""
    from server.backup import backup, restore
    from server.store import Store
    from server.store.keys import TOMBSTONE_PREFIX
    tmp_path = tmp_path_factory.mktemp("restored")
    store = Store(tmp_path / "data" / "store", sync=False)
    store.put("meta", b"from-backup", b"yes")
    store.close()
    out, live = tmp_path / "b.tar", tmp_path / "live"
    backup(tmp_path / "data", out)  # in process (what the CLI runs): the tests run the CLI's
    restore(out, live)
    store = Store(live / "store", sync=False)
    store.put("meta", TOMBSTONE_PREFIX + b"erased-after", b"1")  # an erasure after the backup
    store.close()
    return out, live


def _live(restored_then_erased, tmp_path: Path) -> tuple[Path, Path]:
    """(the module's backup, this test's own copy of the data dir restored from it that then
    erased a user)."""
    out, template = restored_then_erased
    live = tmp_path / "live"
    shutil.copytree(template, live, symlinks=True)
    return out, live


def _restore_again_keeps_the_erasure(out, live) -> None:
    """The restore of `out` into `live` (`restored_then_erased`), run again with --force,
    finishes: the backup's record in place, and the erasure made after it carried over."""
    from server.store import Store
    from server.store.keys import TOMBSTONE_PREFIX
    reply = json.loads(run_command("restore", "--from", str(out), "--data-dir", str(live),
                                   "--force").stdout)
    assert reply["erasures_after_backup"] == 1
    assert sorted(p.name for p in live.iterdir()) == ["bundles", "store", "tailor.lock"]
    store = Store(live / "store", sync=False)
    assert store.get("meta", b"from-backup") == b"yes"
    assert store.get("meta", TOMBSTONE_PREFIX + b"erased-after") == b"1"
    store.close()


@pytest.mark.parametrize("killed_at", [1, 2, 3, 4])
def test_a_restore_killed_while_it_swaps_is_finished_by_running_it_again(restored_then_erased,
                                                                         tmp_path, killed_at):
    """The swap renames `store` away, the copy in, then the same for `bundles`: killed between
    two renames it left no `store/` (or no `bundles/`), and the next server start made a new,
    empty store there and served it; running the restore again then carried no erasure (the
    replaced store, in `.replaced-store`, was not read). Now nothing opens a data dir a restore
    left unfinished, and the restore run again carries the erasures of the store it replaces."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    out, live = _live(restored_then_erased, tmp_path)
    killed = subprocess.run([sys.executable, "-c", _RESTORE_KILLED_AT, str(out), str(live),
                             str(killed_at)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    env = {"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    serve = run_module("server", "--port", "0", "--data-dir", str(live), check=False, timeout=60,
                       env={**os.environ, **env})
    for refused in (serve, *(run_command(command, "--data-dir", str(live), check=False, env=env)
                             for command in ("migrate", "compact"))):
        assert refused.returncode in (1, 2) and "Traceback" not in refused.stderr, refused.stderr
        assert f"a restore into {live} did not finish" in refused.stderr, refused.stderr
    _restore_again_keeps_the_erasure(out, live)


@pytest.mark.parametrize("killed_at", [1, 2])
def test_a_restore_into_a_fresh_dir_killed_and_run_again_still_says_erasures_are_unknown(
        restored_then_erased, tmp_path, killed_at):
    """Run again after it was killed between its renames (the store swapped in: 2), a restore
    into a fresh dir took the copy it had swapped in for a store it replaced, found no erasure
    missing from the backup and answered 0 and nothing to do (the killed run printed nothing):
    a user erased after the backup was served again. It still says they are not known."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    out, fresh = restored_then_erased[0], tmp_path / "fresh"
    killed = subprocess.run([sys.executable, "-c", _RESTORE_KILLED_AT, str(out), str(fresh),
                             str(killed_at)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9 and killed.stdout == "", killed.stderr
    again = run_command("restore", "--from", str(out), "--data-dir", str(fresh), "--force")
    reply = json.loads(again.stdout)
    assert reply["erasures_after_backup"] is None
    assert reply["erase_again"].startswith("no store was replaced, so users erased after the "
                                           "backup are not known here")
    assert f"restore: {reply['erase_again']}" in again.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["bundles", "store", "tailor.lock"]


def test_a_restore_over_a_damaged_store_replaces_it_and_says_erasures_are_unknown(
        restored_then_erased, tmp_path):
    """The replaced store's tombstones were read through the open that refuses a damaged store
    (StoreUnreadable, not an lmdb.Error): `restore --force` over one failed with 'cannot open
    the store ... restore it from a backup' and replaced nothing. It replaces it, and says who
    was erased after the backup is not known (`null`), as documented."""
    from server.store import Store
    data, out = tmp_path / "data", restored_then_erased[0]
    Store(data / "store", sync=False).close()
    (data / "store" / "data.mdb").write_bytes(b"x" * 100)  # damaged
    restored = run_command("restore", "--from", str(out), "--data-dir", str(data), "--force")
    reply = json.loads(restored.stdout)
    assert reply["erasures_after_backup"] is None
    assert reply["erase_again"].startswith("the replaced store could not be read, so users "
                                           "erased after the backup are not known")
    store = Store(data / "store", sync=False)
    assert store.get("meta", b"from-backup") == b"yes"
    store.close()


_RESTORE_INTERRUPTED_AT = """
import os, sys
from pathlib import Path
import server.backup as b
calls, real = [], os.replace
def replace(src, dst):
    calls.append(dst)
    real(src, dst)
    if len(calls) == int(sys.argv[3]):
        raise KeyboardInterrupt  # Ctrl-C right after this rename
os.replace = replace
try:
    b.restore(Path(sys.argv[1]), Path(sys.argv[2]), force=True)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("interrupted_after", [1, 2, 3])
def test_a_restore_interrupted_while_it_swaps_leaves_the_data_dir_refused(restored_then_erased,
                                                                          tmp_path,
                                                                          interrupted_after):
    """Ctrl-C (or any error) while the restore swapped ran its `finally`, which deleted
    `.restoring`, the very mark that the restore did not finish: after the first rename no
    `store/` was left and the next start made an empty store and served it; after the second,
    the restored store was served with the replaced bundles. The mark stays once the swap has
    begun: every command refuses the data dir until the restore is run again."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    out, live = _live(restored_then_erased, tmp_path)
    cut = subprocess.run([sys.executable, "-c", _RESTORE_INTERRUPTED_AT, str(out), str(live),
                          str(interrupted_after)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert cut.returncode == 130, cut.stderr
    env = {"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    for command in (["migrate"], ["compact"], ["backup", "--out", str(tmp_path / "c.tar")]):
        refused = run_command(*command, "--data-dir", str(live), check=False, env=env)
        assert refused.returncode == 1, refused.stderr
        assert f"a restore into {live} did not finish" in refused.stderr, refused.stderr
    _restore_again_keeps_the_erasure(out, live)


def test_a_restore_into_an_empty_dir_killed_midway_says_to_run_it_again_with_force(
        restored_then_erased, tmp_path):
    """Killed once it had swapped its store in, a restore into an empty dir left a data dir
    every command refused with "run `python -m server restore` again"; run again so, it was
    refused "not empty (store); restore into an empty dir, or pass --force", the store it
    names its own. Both now say to run it again with --force, and that finishes it."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    out, fresh = restored_then_erased[0], tmp_path / "fresh"
    killed = subprocess.run([sys.executable, "-c", _RESTORE_KILLED_AT, str(out), str(fresh), "2",
                             "--no-force"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr
    again = (f"run `python -m server restore --from BACKUP --data-dir {fresh} --force` again "
             "with the same backup (--force: it replaces what the unfinished restore swapped in)")
    refused = run_command("migrate", "--data-dir", str(fresh), check=False,
                          env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert refused.stderr == (f"migrate: a restore into {fresh} did not finish (.restoring is "
                              f"there): {again}\n")
    refused = run_command("restore", "--from", str(out), "--data-dir", str(fresh), check=False)
    assert refused.returncode == 1 and refused.stdout == "", refused.stderr
    assert refused.stderr == (f"restore: a restore into {fresh} did not finish (.restoring is "
                              f"there) and it holds store: {again}\n")
    finished = run_command("restore", "--from", str(out), "--data-dir", str(fresh), "--force")
    assert json.loads(finished.stdout)["command"] == "restore"
    assert sorted(p.name for p in fresh.iterdir()) == ["bundles", "store", "tailor.lock"]


def test_the_command_a_refusal_gives_runs_as_written_for_any_data_dir(tmp_path):
    """Its `python -m server restore ... --data-dir D --force` is copied into a shell: a data
    dir with a space or a quote in its name was written bare, and the shell split it."""
    import re
    import shlex

    from server.__main__ import build_parser
    from server.errors import FailedPrecondition
    from server.store.lock import RESTORING, check_restore_finished

    for name in ("my data", "it's", "plain"):
        data = tmp_path / name
        (data / RESTORING).mkdir(parents=True)
        with pytest.raises(FailedPrecondition) as err:
            check_restore_finished(data)
        command = re.search(r"run `python -m server (restore [^`]*)`", str(err.value))[1]
        args = build_parser().parse_args(shlex.split(command.replace("BACKUP", "b.tar")))
        assert (args.command, Path(args.data_dir), args.force) == ("restore", data, True), command
