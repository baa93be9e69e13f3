"""`server.durable`: a change in place whose directory fsync fails is reported done with a warning,
not failed; new directories are on disk in their parents; a filesystem that cannot fsync a
directory is tolerated (once warned), an I/O error never is.

The one failure injected is an fsync of a chosen directory's descriptor (`os.fsync` wrapped, the
real one called for everything else): no filesystem here refuses it on demand."""
import errno
import json
import logging
import os
import pickle
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from contract import durable as contract_durable
from server import durable
from server.security.principals import load_auth_config, token_hash
from server.security.secrets import Keyring, Secrets
from tests.conftest import ROOT, run_module

_FAILING_DIR = """
import os, stat, sys
real, where, code = os.fsync, os.path.realpath(sys.argv[1]), int(sys.argv[2])
def fsync(fd):
    if stat.S_ISDIR(os.fstat(fd).st_mode) and os.readlink(f"/proc/self/fd/{fd}") == where:
        raise OSError(code, os.strerror(code))
    return real(fd)
os.fsync = fsync
from server.__main__ import main
main(sys.argv[3:])
"""
"""`python -m server ARGS` whose fsync of the directory argv[1] fails with errno argv[2]."""


def _run_failing(directory: Path, code: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _FAILING_DIR, str(directory), str(code), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _dir_fsyncs(monkeypatch) -> list[Path]:
    """The directories fsynced from now on (the real fsync still runs)."""
    real, synced = os.fsync, []

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _dir_fsync_fails(monkeypatch, code: int) -> None:
    """Every directory fsync fails with `code`; files' fsyncs run."""
    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_a_token_minted_where_the_directory_cannot_be_synced_is_printed_with_a_warning(tmp_path):
    """The new hash replaced the old one, then the directory fsync failed: the command printed a
    traceback and no token, so the principal's old token was gone and the new one unknown."""
    auth = tmp_path / "auth" / "auth.toml"
    auth.parent.mkdir()
    minted = _run_failing(auth.parent, errno.EIO, "token", "--auth-config", str(auth),
                          "--name", "ops", "--roles", "admin")
    assert minted.returncode == 0 and "Traceback" not in minted.stderr, minted.stderr
    token = minted.stdout.splitlines()[-1]
    assert load_auth_config(auth).by_token[token_hash(token)].name == "ops"
    assert minted.stderr == (f"token: done, but {auth.parent} could not be synced (Input/output "
                             "error): the change is in place, but may not survive a power loss\n")
    revoked = _run_failing(auth.parent, errno.EIO, "token", "--auth-config", str(auth),
                           "--revoke", "ops")
    assert revoked.returncode == 0 and revoked.stdout.startswith("revoked ops"), revoked.stderr
    assert "could not be synced" in revoked.stderr
    assert not load_auth_config(auth).by_token


def test_a_start_whose_new_keyring_cannot_be_synced_is_one_line(tmp_path):
    """A development keyring linked in, its directory's fsync failed: a traceback at start."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    proc = subprocess.run([sys.executable, "-c", _FAILING_DIR, str(secrets), str(errno.EIO),
                           "--port", "0", "--data-dir", str(tmp_path / "d")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TAILOR_SECRETS_DIR": str(secrets)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == (
        f"error: secrets_dir (TAILOR_SECRETS_DIR): {secrets} could not be synced (Input/output "
        "error): check that disk, then start again")


def test_a_rotation_whose_directory_cannot_be_synced_reports_the_new_key_with_a_warning(tmp_path):
    secrets = tmp_path / "secrets"
    run_module("server", "secrets", "init", "--secrets-dir", str(secrets))
    rotated = _run_failing(secrets, errno.EIO, "secrets", "rotate", "audit",
                           "--secrets-dir", str(secrets))
    assert rotated.returncode == 0 and "secrets: done, but" in rotated.stderr, rotated.stderr
    reply = json.loads(rotated.stdout)
    assert Keyring.parse("audit", (secrets / "audit.keys").read_text()).kid == reply["signing"]
    assert len(reply["keys"]) == 2


def test_secrets_init_stops_in_one_line_when_a_new_keyring_is_not_on_disk(tmp_path):
    """Anything sealed under a keyring a power loss takes back would never open: `secrets init`
    stops at the first keyring whose directory cannot be synced, in one line, not a traceback,
    saying the file is in place."""
    secrets = tmp_path / "secrets"
    refused = _run_failing(secrets, errno.EIO, "secrets", "init", "--secrets-dir", str(secrets))
    assert refused.returncode == 1 and refused.stdout == "", refused.stderr
    assert refused.stderr == (f"secrets: {secrets} could not be synced (Input/output error): the "
                              "change is in place, but may not survive a power loss\n")
    assert len(list(secrets.glob("*.keys"))) == 1 and not list(secrets.glob(".*"))


def test_a_compaction_or_backup_whose_directory_cannot_be_synced_is_done_with_a_warning(tmp_path):
    """Each printed a traceback and exited 1 once its file was renamed into place (compaction
    also left its emptied copy dir behind); then each exited 0 without its report on stdout
    (the sizes; the backup's manifest, which a script reads)."""
    from server.store import Store
    data = tmp_path / "data"
    store = Store(data / "store", sync=False)
    store.put("meta", b"kept", b"yes")
    store.close()
    compacted = _run_failing(data / "store", errno.EIO, "compact", "--data-dir", str(data))
    assert compacted.returncode == 0, compacted.stderr
    assert compacted.stderr.startswith(f"compact: done, but {data / 'store'} could not be synced")
    assert re.fullmatch(rf"compacted {re.escape(str(data / 'store'))}: \d+ -> \d+ bytes\n", compacted.stdout)
    assert sorted(p.name for p in data.iterdir()) == ["store", "tailor.lock"]
    out = tmp_path / "backups"
    out.mkdir()
    backed = _run_failing(out, errno.EIO, "backup", "--data-dir", str(data),
                          "--out", str(out / "b.tar"))
    assert backed.returncode == 0, backed.stderr
    assert backed.stderr.startswith(f"backup: done, but {out} could not be synced")
    assert [p.name for p in out.iterdir()] == ["b.tar"]
    reply = json.loads(backed.stdout)
    assert reply["command"] == "backup" and reply["store_bytes"] > 0, backed.stdout
    store = Store(data / "store", sync=False)
    assert store.get("meta", b"kept") == b"yes"
    store.close()



def test_a_backup_whose_new_out_directory_cannot_be_synced_stops_and_says_nothing_was_written(
        tmp_path):
    """`make_dirs(--out's directory)` runs before anything is written, and its `Unconfirmed` was
    reported as the backup done (exit 0, no archive, no manifest printed)."""
    from server.store import Store
    data, out = tmp_path / "data", tmp_path / "new" / "b.tar"
    Store(data / "store", sync=False).close()
    refused = _run_failing(tmp_path, errno.EIO, "backup", "--data-dir", str(data),
                           "--out", str(out))
    assert refused.returncode == 1 and refused.stdout == "", refused.stderr
    assert refused.stderr == (f"backup: {out.parent} was made, but {tmp_path} could not be synced"
                              " (Input/output error): a power loss may take it, and the backup "
                              "with it; nothing was backed up\n")
    assert list(out.parent.iterdir()) == []

def test_rotate_key_stops_when_the_new_master_key_is_not_on_disk(tmp_path):
    """Data keys wrapped under a master key whose keyring file a power loss takes back would
    never open again: the command stops before wrapping any, in one line that says so. A store
    never rotated had no `datakey-kid`, so a server opened after the refusal wrapped its new
    users' keys under the keyring's front key: the new one."""
    from server.profiles import ProfileSchema, TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.store import Store
    from server.store.crypto import StoreCrypto
    from server.store.datakeys import WRAP_KID_KEY
    from server.store.rotation import kids_in_use
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    rings = Secrets.load(secrets, generate=True, environ={})
    store = Store(data / "store", sync=False, crypto=StoreCrypto.from_secrets(rings))
    ProfileRepository(store, ProfileSchema().layout()).ingest(
        [TrackedEvent("evt-1-q", "ann", "view", "web", "", "i1", 0.0, 1764000000.0, {})], [None])
    before = (kids_in_use(store), store.get("meta", WRAP_KID_KEY))
    assert sum(before[0].values()) == 1
    store.close()
    refused = _run_failing(secrets, errno.EIO, "rotate-key", "--data-dir", str(data),
                           "--secrets-dir", str(secrets))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.startswith(f"rotate-key: {secrets} could not be synced"), refused.stderr
    assert "no data key was wrapped under the new master key" in refused.stderr
    old_kid = rings["encryption"].kid
    assert before[1] is None and Keyring.parse("encryption", (
        secrets / "encryption.keys").read_text()).kid != old_kid  # the new key in front
    store = Store(data / "store", sync=False, crypto=StoreCrypto.from_secrets(
        Secrets.load(secrets, generate=False, environ={})))  # as a server started since
    assert kids_in_use(store) == before[0]
    assert store.get("meta", WRAP_KID_KEY) == old_kid.encode()
    ProfileRepository(store, ProfileSchema().layout()).ingest(
        [TrackedEvent("evt-2-q", "bob", "view", "web", "", "i1", 0.0, 1764000000.0, {})], [None])
    assert kids_in_use(store) == {old_kid: 2}
    store.close()


def test_a_directory_fsync_the_filesystem_does_not_support_is_skipped_warned_once(
        tmp_path, monkeypatch, caplog):
    """EINVAL from fsync on a directory (some network and FUSE filesystems) failed every rename
    that gained a directory fsync; SQLite and PostgreSQL carry on there."""
    monkeypatch.setattr(contract_durable, "_warned_unsupported", False)
    _dir_fsync_fails(monkeypatch, errno.EINVAL)
    caplog.set_level(logging.WARNING, logger="tailor.durable")
    for text in ("one", "two"):
        (tmp_path / "tmp").write_text(text)
        durable.replace(tmp_path / "tmp", tmp_path / "file")
    durable.make_dirs(tmp_path / "a" / "b")
    assert (tmp_path / "file").read_text() == "two" and (tmp_path / "a" / "b").is_dir()
    warned = [r.getMessage() for r in caplog.records if r.name == "tailor.durable"]
    assert len(warned) == 1 and "does not support fsync on a directory" in warned[0], warned


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_directory_fsync_that_fails_otherwise_is_raised_as_unconfirmed(tmp_path, monkeypatch,
                                                                         code):
    _dir_fsync_fails(monkeypatch, code)
    (tmp_path / "tmp").write_text("new")
    with pytest.raises(durable.Unconfirmed) as err:
        durable.replace(tmp_path / "tmp", tmp_path / "file")
    assert err.value.errno == code and "the change is in place" in str(err.value)
    assert (tmp_path / "file").read_text() == "new"
    again = pickle.loads(pickle.dumps(err.value))  # as another process would receive it
    assert (type(again), again.errno, str(again)) == (durable.Unconfirmed, code, str(err.value))


def test_a_file_fsync_refused_as_einval_is_not_taken_for_a_directory_one(tmp_path, monkeypatch):
    real = os.fsync

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "tmp").write_text("new")
    with pytest.raises(OSError) as err:
        durable.replace(tmp_path / "tmp", tmp_path / "file")
    assert err.value.errno == errno.EINVAL and not (tmp_path / "file").exists()


def test_make_dirs_syncs_the_parent_of_every_level_it_made_and_nothing_else(tmp_path, monkeypatch):
    synced = _dir_fsyncs(monkeypatch)
    durable.make_dirs(tmp_path / "a" / "b" / "c", mode=0o700)
    assert synced == [tmp_path / "a" / "b", tmp_path / "a", tmp_path]
    assert stat.S_IMODE((tmp_path / "a" / "b" / "c").stat().st_mode) == 0o700
    synced.clear()
    durable.make_dirs(tmp_path / "a" / "b" / "c")
    assert synced == []
    with pytest.raises(FileExistsError):
        durable.make_dirs(tmp_path / "a" / "b" / "c", exist_ok=False)


def test_make_dirs_under_a_parent_it_may_write_but_not_open_warns(tmp_path, monkeypatch, caplog):
    """A parent of mode 0733 (writable, not readable: its owner's drop box) cannot be opened to
    fsync it; failing there would refuse a data dir that served before the parent's sync."""
    real, parent = os.open, tmp_path / "dropbox"
    parent.mkdir()

    def refusing(path, flags, *args, **kw):  # run as root here: EACCES only by injection
        if Path(path) == parent:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, flags, *args, **kw)
    monkeypatch.setattr(os, "open", refusing)
    caplog.set_level(logging.WARNING, logger="tailor.durable")
    durable.make_dirs(parent / "data")
    assert (parent / "data").is_dir()
    assert f"cannot open {parent} to fsync it" in caplog.text
    monkeypatch.setattr(os, "open", real)
    _dir_fsync_fails(monkeypatch, errno.EIO)  # any other error is raised
    with pytest.raises(durable.Unconfirmed):
        durable.make_dirs(parent / "other")


def test_the_directories_a_server_makes_for_its_state_are_synced_in_their_parents(tmp_path,
                                                                                  monkeypatch):
    """The data dir, its store, audit log and keyrings' dir were made with `mkdir` alone: after
    a power loss the new directory's entry, and everything under it, could be gone."""
    from server.security.audit import AuditLog
    from server.store import Store, lock_data_dir
    synced = _dir_fsyncs(monkeypatch)
    lock_data_dir(tmp_path / "d1" / "data", exclusive=False).close()
    assert {tmp_path, tmp_path / "d1"} <= set(synced)
    Store(tmp_path / "d2" / "store", sync=False).close()
    assert tmp_path / "d2" in synced
    ring = Secrets.load(tmp_path / "d3" / "secrets", generate=True, names=("audit",))["audit"]
    assert tmp_path / "d3" in synced
    AuditLog(tmp_path / "d4" / "audit", ring)
    assert tmp_path / "d4" in synced


_SCRATCH = {  # (file, the call): renamed into place after an fsync of its own, or deleted
    ("server/workers.py", "tempfile.mkdtemp("),  # the workers' metrics files: gone at the stop
    ("server/store/baseline.py", "tempfile.mkdtemp("),  # a benchmark's scratch store
    ("server/store/compaction.py", "fresh.mkdir("),  # its data.mdb renamed into store/, synced
    ("server/store/reerase/rewrite.py", "fresh.mkdir("),  # the same
    ("server/store/backup.py", "dest_dir.mkdir("),  # the snapshot in a backup's staging dir
    ("server/backup/copying.py", "dest.mkdir("),  # the bundles' copy in a backup's staging dir
    ("server/backup/staging.py", "tempfile.mkdtemp("),  # a backup's staging dir
    ("server/backup/restoring.py", '(staging / "bundles").mkdir('),  # fsync_tree, then renamed
    ("server/models/staging.py", "self.dir.mkdir("),  # a push's upload: the same, or deleted
}


def test_every_directory_the_server_makes_goes_through_make_dirs_or_is_scratch():
    """A new creation site (`mkdir`, `makedirs`, `mkdtemp`) outside `durable` is
    `durable.make_dirs`, or a scratch directory listed above with why its name need not
    survive."""
    found = set()
    for path in sorted(Path(ROOT, "server").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel != "server/durable.py":
            found |= {(rel, line.strip()) for line in path.read_text().splitlines()
                      if re.search(r"\b(mkdir|makedirs|mkdtemp)\(", line)}
    listed = {(rel, line) for rel, line in found for file, call in _SCRATCH
              if rel == file and call in line}
    assert found == listed and len(listed) == len(_SCRATCH), found - listed


def _backed_up(tmp_path) -> Path:
    """A backup (one record) of a store under `tmp_path/src`."""
    from server.backup import backup
    from server.store import Store
    store = Store(tmp_path / "src" / "store", sync=False)
    store.put("meta", b"kept", b"yes")
    store.close()
    backup(tmp_path / "src", tmp_path / "b.tar")
    return tmp_path / "b.tar"


def test_a_restore_whose_swap_cannot_be_synced_stops_in_one_line_and_is_run_again(tmp_path):
    """The store renamed in, the data dir's fsync failed: a traceback (a plain fsync, not
    `durable.confirm`). Now one line that says the restore did not finish; its mark stays, so
    every command refuses the data dir until it is run again."""
    archive, dest = _backed_up(tmp_path), tmp_path / "dest"
    dest.mkdir()
    failed = _run_failing(dest, errno.EIO, "restore", "--from", str(archive),
                          "--data-dir", str(dest))
    assert failed.returncode == 1 and failed.stdout == "", failed.stderr
    assert failed.stderr == (f"restore: {dest} could not be synced during the swap (Input/output "
                             "error): the restore did not finish (.restoring is kept); run "
                             f"`python -m server restore --from BACKUP --data-dir {dest} --force` "
                             "again with the same backup (--force: it replaces what the "
                             "unfinished restore swapped in)\n")
    assert (dest / ".restoring").is_dir()
    again = run_module("server", "restore", "--from", str(archive), "--data-dir", str(dest),
                       "--force")
    assert json.loads(again.stdout.splitlines()[0])["command"] == "restore"
    assert sorted(p.name for p in dest.iterdir()) == ["bundles", "store", "tailor.lock"]


@pytest.mark.parametrize("fails", [False, True])
def test_a_restore_is_done_once_its_mark_is_gone_on_disk(tmp_path, monkeypatch, fails):
    """Its staging dir (the mark every command refuses) was removed and never synced: a power
    loss after `restore` said done could bring it back, and the data dir was refused until the
    restore ran again. The data dir is synced once the mark is gone; that fsync failing is the
    restore done with its warning (`unconfirmed`), as compaction and backup report theirs."""
    from server.backup import restore
    archive, dest = _backed_up(tmp_path), tmp_path / "dest"
    dest.mkdir()
    real, synced = os.fsync, []

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(dest):
            synced.append((dest / ".restoring").exists())
            if fails and not synced[-1]:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    warned = []
    manifest = restore(archive, dest, unconfirmed=warned.append)
    monkeypatch.undo()
    assert manifest["store_bytes"] > 0
    assert synced[-1] is False, synced  # the last fsync of the data dir: the mark gone
    assert [str(w) for w in warned] == ([f"{dest} could not be synced (Input/output error): the "
                                         "change is in place, but may not survive a power loss"]
                                        if fails else [])
    assert sorted(p.name for p in dest.iterdir()) == ["bundles", "store", "tailor.lock"]


@pytest.mark.parametrize("made", [False, True])
def test_a_push_syncs_bundles_once(tmp_path, monkeypatch, demo_bundle, made):
    """A push synced `bundles/` twice: once for its scratch upload dir's name (`make_dirs`),
    which is renamed into place (synced whole first) or deleted, and once for that rename,
    which the pointer relies on. Now once; `bundles/` made by the push is synced in its
    parent."""
    from server.models.staging import BundleStaging
    bundles = tmp_path / "data" / "bundles"
    bundles.parent.mkdir()
    if not made:
        bundles.mkdir()
    synced = _dir_fsyncs(monkeypatch)
    staging = BundleStaging(bundles)
    for f in demo_bundle.iterdir():
        if f.is_file():
            staging.write(f.name, 0, f.read_bytes())
    final = staging.publish()
    staging.release()
    monkeypatch.undo()
    assert final == bundles / demo_bundle.name and (final / "manifest.json").is_file()
    assert synced.count(bundles) == 1, synced
    assert synced.count(tmp_path / "data") == (1 if made else 0), synced
