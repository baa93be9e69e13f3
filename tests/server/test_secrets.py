"""Keyrings: sources, development generation on loopback only, rotation, refusal elsewhere."""
import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.errors import FailedPrecondition
from server.security.audit import AuditLog, verify_chain
from server.security.secrets import KEYRINGS, Keyring, MissingSecret, Secrets, env_name
from tests.conftest import (
    AWAIT_GO,
    ROOT,
    ServerProcess,
    free_port,
    run_at_once,
    run_command,
    run_module,
    serving,
)


@pytest.fixture(scope="module")
def initialized(tmp_path_factory):
    """A secrets dir `python -m server secrets init` wrote, once for the module: tests that
    rotate in one take a copy of their own (`_initialized_copy`)."""
    secrets = tmp_path_factory.mktemp("initialized") / "secrets"
    run_module("server", "secrets", "init", "--secrets-dir", str(secrets))
    return secrets


def _initialized_copy(initialized, tmp_path):
    """This test's own copy of the `initialized` secrets dir, modes kept: `tmp_path/secrets`."""
    import shutil
    secrets = tmp_path / "secrets"
    shutil.copytree(initialized, secrets, symlinks=True)
    return secrets


def test_a_value_signed_before_a_rotation_still_verifies_and_new_ones_use_the_new_key():
    ring = Keyring.generate("unsubscribe", "old")
    token = ring.sign(b"user-1/email")
    rotated = ring.rotated("new")
    assert rotated.kid == "new" and [k for k, _ in rotated.keys] == ["new", "old"]
    assert rotated.verify(b"user-1/email", token)
    fresh = rotated.sign(b"user-1/email")
    assert fresh.startswith("new.") and fresh != token
    assert not ring.verify(b"user-1/email", fresh)  # the old ring does not know the new key
    assert not rotated.verify(b"user-2/email", token)
    assert not rotated.rotated("newer", keep=1).verify(b"user-1/email", token)  # `old` dropped


def test_parse_reads_kid_and_base64_entries_and_refuses_bad_ones():
    ring = Keyring.parse("audit", Keyring.generate("audit", "b").text() + "# a comment\n"
                         + Keyring.generate("audit", "a").text())
    assert [k for k, _ in ring.keys] == ["b", "a"]
    for bad in ("", "k1", "k1:not-base64!", "k1:c2hvcnQ=", "k:" + "A" * 44 + ",k:" + "B" * 44):
        with pytest.raises(Exception, match="secret 'audit'"):
            Keyring.parse("audit", bad)


def test_load_generates_missing_keyrings_once_and_the_environment_wins(tmp_path):
    first = Secrets.load(tmp_path / "s", generate=True, environ={})
    again = Secrets.load(tmp_path / "s", generate=True, environ={})
    for name in KEYRINGS:
        assert first[name].keys == again[name].keys
        assert (tmp_path / "s" / f"{name}.keys").stat().st_mode & 0o777 == 0o600
    env = {env_name("audit"): Keyring.generate("audit", "from-env").text()}
    assert Secrets.load(tmp_path / "s", generate=False, environ=env)["audit"].kid == "from-env"


def test_missing_secrets_are_not_generated_without_leave(tmp_path):
    with pytest.raises(MissingSecret, match="TAILOR_SECRET_USER_ID"):
        Secrets.load(tmp_path / "empty", generate=False, environ={})
    assert not (tmp_path / "empty").exists()


def test_a_missing_keyring_under_a_relative_secrets_dir_names_where_it_was_looked_for(tmp_path):
    """`audit verify` run from another directory than the servers' said `write
    var/secrets/audit.keys`, as though the keyrings were gone, not looked for elsewhere."""
    out = subprocess.run([sys.executable, "-m", "server", "audit", "ref", "--user-id", "u1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")})
    assert out.returncode == 1
    assert f"write var/secrets/user-id.keys (from {tmp_path}: a relative secrets dir; " \
           "--secrets-dir or TAILOR_SECRETS_DIR names the servers')" in out.stderr, out.stderr


def test_a_missing_keyring_from_a_removed_working_directory_is_still_one_line(tmp_path,
                                                                           monkeypatch):
    """A command run from a directory removed since (a release dir replaced by a deploy) read
    its relative keyring as missing, and naming the working directory raised FileNotFoundError
    in place of the MissingSecret line."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    err = MissingSecret("user-id", Path("var/secrets/user-id.keys"))
    assert "write var/secrets/user-id.keys (from a working directory that no longer exists: a " \
           "relative secrets dir;" in str(err)


def test_a_server_on_a_non_loopback_address_refuses_to_start_without_secrets(tmp_path):
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    # --insecure passes the transport rule (no TLS, no auth config): the secrets rule still holds
    proc = subprocess.run([sys.executable, "-m", "server", "--host", "0.0.0.0", "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "data"), "--insecure"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "refusing to start: secret 'user-id' is missing" in proc.stderr
    assert not (tmp_path / "secrets").exists()


def test_rotating_the_audit_key_keeps_the_old_lines_verifiable(tmp_path):
    secrets = Secrets.load(tmp_path / "secrets", generate=True, environ={})
    old_kid = secrets["audit"].kid
    AuditLog(tmp_path / "audit", secrets["audit"]).record("p", "/m", "u1", "OK", "r1")
    out = run_command("secrets", "rotate", "audit", "--secrets-dir", str(tmp_path / "secrets"))
    keys = json.loads(out.stdout)["keys"]
    assert keys[1] == old_kid and len(keys) == 2
    ring = Secrets.load(tmp_path / "secrets", generate=False, environ={})["audit"]
    entry = AuditLog(tmp_path / "audit", ring).record("p", "/m", "u2", "OK", "r2")
    assert entry["kid"] == keys[0] != old_kid
    result = verify_chain(tmp_path / "audit", ring)
    assert result.ok and result.lines == 2
    assert not verify_chain(tmp_path / "audit", secrets["audit"]).ok  # without the new key


def test_secrets_init_writes_every_keyring_once(tmp_path):
    args = ["secrets", "init", "--secrets-dir", str(tmp_path / "s")]
    first = json.loads(run_command(*args).stdout)["signing"]
    assert set(first) == set(KEYRINGS)
    assert json.loads(run_command(*args).stdout)["signing"] == first
    assert Secrets.load(tmp_path / "s", generate=False, environ={})["audit"].kid == first["audit"]


def test_secrets_init_does_not_call_the_deployments_keys_development_ones(tmp_path):
    """`secrets init` is how a deployment makes its keys (docs/operations.md), yet it logged
    "generated a development secret ... (never use it in production)" for each one; only the
    keys a loopback server makes for itself are development ones."""
    proc = run_module("server", "secrets", "init", "--secrets-dir", str(tmp_path / "s"))
    assert "development" not in proc.stderr and "never use" not in proc.stderr, proc.stderr
    assert set(json.loads(proc.stdout)["signing"]) == set(KEYRINGS)


def test_the_store_id_keyring_is_never_rotated(initialized, tmp_path):
    """Every store key is a keyed hash under `store-id`'s signing key: rotating it made every
    server refuse the store at its next start ("written under another 'store-id' key")."""
    secrets = _initialized_copy(initialized, tmp_path)
    before = (secrets / "store-id.keys").read_text()
    refused = run_command("secrets", "rotate", "store-id", "--secrets-dir", str(secrets),
                          check=False)
    assert refused.returncode == 1 and "store-id" in refused.stderr and "never" in refused.stderr
    assert (secrets / "store-id.keys").read_text() == before


@pytest.mark.parametrize("name", ["erasure", "suppression", "user-id", "encryption", "audit",
                                  "unsubscribe", "sms-webhook", "delivery-events"])
def test_keyrings_whose_old_keys_find_records_keep_them_all(initialized, tmp_path, name):
    """Tombstones, suppression entries and impressions are found by keyed hashes under the key
    they were written with: `--keep` would drop keys and with them erased users (back in
    training), suppressed addresses (contacted again) or the impressions filed under the
    dropped `user-id` key, which DeleteProfile then no longer finds (they stayed after the
    erasure, for `impression_retention_days`). Every data key is wrapped under an `encryption`
    master key: `--keep 0` overwrote the only copy of the one in use, and every sealed record
    of the store was unreadable for good (the server then refused to start). An audit line
    under a dropped `audit` key no longer verifies, nor does any later line chained to it:
    `audit verify` called an untouched log broken until retention dropped its files. Every
    unsubscribe link already sent is signed under an `unsubscribe` key; an SMS provider and a
    bounce feed sign with the `sms-webhook` and `delivery-events` key they were given: `--keep 0`
    broke the links, and refused every STOP, bounce and complaint until the provider had the
    new key."""
    secrets = _initialized_copy(initialized, tmp_path)
    if name in ("sms-webhook", "delivery-events"):  # optional: the provider's secret, given
        (secrets / f"{name}.keys").write_text(f"p1:{base64.b64encode(b'p' * 32).decode()}\n")
    run_command("secrets", "rotate", name, "--secrets-dir", str(secrets))
    before = (secrets / f"{name}.keys").read_text()
    refused = run_command("secrets", "rotate", name, "--keep", "0", "--secrets-dir",
                          str(secrets), check=False)
    assert refused.returncode == 1 and "--keep" in refused.stderr
    assert (secrets / f"{name}.keys").read_text() == before


def test_a_keyring_file_holding_raw_key_bytes_is_refused_naming_it(tmp_path):
    """`head -c 32 /dev/urandom > audit.keys` (a raw key, not `kid:base64key` lines) raised
    UnicodeDecodeError: a traceback at start, from `audit verify` and from `secrets rotate`."""
    Secrets.load(tmp_path / "s", generate=True, environ={})
    (tmp_path / "s" / "audit.keys").write_bytes(b"\xff\x00\x9a\x13" + os.urandom(28))
    with pytest.raises(FailedPrecondition, match=r"secret 'audit' .*audit\.keys.*kid:base64key"):
        Secrets.load(tmp_path / "s", generate=False, environ={})
    (tmp_path / "data").mkdir()
    out = run_command("audit", "verify", "--data-dir", str(tmp_path / "data"),
                      "--secrets-dir", str(tmp_path / "s"), check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "secret 'audit'" in out.stderr



def test_a_keyring_path_that_cannot_be_read_is_refused_naming_it(tmp_path):
    """A secret mounted as a directory named `audit.keys` (or a file this account may not
    read) raised IsADirectoryError / PermissionError: a traceback at start, from `audit
    verify` and from `secrets rotate`."""
    Secrets.load(tmp_path / "s", generate=True, environ={})
    (tmp_path / "s" / "audit.keys").unlink()
    (tmp_path / "s" / "audit.keys").mkdir()
    with pytest.raises(FailedPrecondition, match=r"secret 'audit' in .*audit\.keys: cannot read "
                                                 r"it \(Is a directory\)"):
        Secrets.load(tmp_path / "s", generate=False, environ={})
    (tmp_path / "data").mkdir()
    for args in (("audit", "verify", "--data-dir", str(tmp_path / "data")),
                 ("secrets", "rotate", "audit")):
        out = run_command(*args, "--secrets-dir", str(tmp_path / "s"), check=False)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert "secret 'audit' in" in out.stderr and "cannot read it" in out.stderr
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "s")}
    out = run_module("server", "--host", "127.0.0.1", "--port", str(free_port()), "--data-dir",
                     str(tmp_path / "data"), check=False, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "secret 'audit' in" in out.stderr and "cannot read it" in out.stderr

def test_a_keyring_file_every_user_may_write_is_refused_and_one_they_may_read_is_warned(tmp_path,
                                                                                       caplog):
    Secrets.load(tmp_path, generate=True, environ={})
    audit = tmp_path / "audit.keys"
    audit.chmod(0o666)
    with pytest.raises(FailedPrecondition, match=r"secret 'audit' in .*audit\.keys: every user may "
                                                 r"write it \(mode 0666\).*chmod o-w"):
        Secrets.load(tmp_path, generate=False, environ={})
    assert Secrets.load(tmp_path, generate=False, environ={env_name("audit"): audit.read_text()})
    audit.chmod(0o444)  # a container's secret mount
    caplog.clear()
    Secrets.load(tmp_path, generate=False, environ={})
    assert [r.getMessage() for r in caplog.records if "every user may read" in r.getMessage()] == [
        f"secret 'audit' in {audit}: every user may read it (mode 0444); chmod o-r unless it is "
        "a container's own mount"]
    audit.chmod(0o440)
    caplog.clear()
    Secrets.load(tmp_path, generate=False, environ={})
    assert not [r for r in caplog.records if "every user" in r.getMessage()]
    tmp_path.chmod(0o777)  # anyone may rename a keyring of their own over it
    try:
        with pytest.raises(FailedPrecondition, match=r"secret '.*' in .*: its directory .*: every "
                                                     r"user may write it \(mode 0777\)"):
            Secrets.load(tmp_path, generate=False, environ={})
        tmp_path.chmod(0o1777)  # sticky: only a file's owner may replace it
        Secrets.load(tmp_path, generate=False, environ={})
    finally:
        tmp_path.chmod(0o700)


def test_a_keyring_below_a_directory_every_user_may_write_is_refused(tmp_path):
    """A 0700 secrets directory inside a 0777 one: anyone may move it aside and put their own
    keys in its place."""
    secrets = tmp_path / "shared" / "secrets"
    Secrets.load(secrets, generate=True, environ={})
    secrets.parent.chmod(0o777)
    try:
        with pytest.raises(FailedPrecondition, match=r"secret '.*' in .*: the directory "
                                                     rf"{secrets.parent} above it.*: every user"):
            Secrets.load(secrets, generate=False, environ={})
    finally:
        secrets.parent.chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another account needs root")
def test_a_rotation_run_as_root_keeps_the_keyrings_owner_and_mode(tmp_path):
    """`sudo python -m server secrets rotate audit` beside a server running as its own
    account: the new keyring file was root's, mode 0600, and the server's next start died
    reading it (PermissionError). A k8s-style 0440 mount read by the server's group likewise."""
    secrets = tmp_path / "secrets"
    run_command("secrets", "init", "--secrets-dir", str(secrets))
    path = secrets / "audit.keys"
    os.chown(path, 65534, 65534)
    path.chmod(0o440)
    run_command("secrets", "rotate", "audit", "--secrets-dir", str(secrets))
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o440)
    assert len(Keyring.parse("audit", path.read_text()).keys) == 2


def test_secrets_init_run_as_root_adds_a_keyring_the_servers_account_can_read(tmp_path):
    """An upgrade adding a keyring, run with sudo beside a server of its own account: the new
    keyring was root's, mode 0600, and the server refused to start (cannot read it)."""
    secrets = tmp_path / "secrets"
    run_command("secrets", "init", "--secrets-dir", str(secrets))
    for path in [secrets, *secrets.iterdir()]:
        os.chown(path, 65534, 65534)
        if path != secrets:
            path.chmod(0o640)
    (secrets / "suppression.keys").unlink()
    run_command("secrets", "init", "--secrets-dir", str(secrets))
    st = (secrets / "suppression.keys").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o640)
    for path in secrets.iterdir():  # the directory alone says whose: its owner and group
        path.unlink()
    run_command("secrets", "init", "--secrets-dir", str(secrets))
    st = (secrets / "audit.keys").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o600)


def test_a_rotation_keeps_the_notes_written_in_the_keyring_file(initialized, tmp_path):
    """The docs have old keys deleted by hand once nothing needs them ("once the last message
    it signed is old enough"): operators note that beside each key, and `secrets rotate`
    rewrote the file from its keys alone, dropping every note."""
    secrets = _initialized_copy(initialized, tmp_path)
    path = secrets / "unsubscribe.keys"
    noted = ("# links of 2026 Q1 campaigns, drop after 2026-09-30\n" + path.read_text()
             + "# the key above: Q4 links, keep until 2027-03-31\n")
    path.write_text(noted)
    out = run_command("secrets", "rotate", "unsubscribe", "--secrets-dir", str(secrets))
    new = json.loads(out.stdout)["signing"]
    text = path.read_text()
    assert text.startswith(f"{new}:") and text.endswith(noted)
    assert [kid for kid, _ in Keyring.parse("unsubscribe", text).keys] == json.loads(out.stdout)["keys"]



def test_a_rotation_that_may_not_write_beside_the_keyring_is_one_line(initialized, tmp_path):
    """As `server token`: without the rights to write the secrets directory (sudo forgotten;
    here an immutable directory, which stops root too), a PermissionError traceback."""
    import shutil
    secrets = _initialized_copy(initialized, tmp_path)
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(secrets)], capture_output=True).returncode != 0:
        pytest.skip("no immutable directories here")
    try:
        before = (secrets / "audit.keys").read_text()
        out = run_command("secrets", "rotate", "audit", "--secrets-dir", str(secrets),
                          check=False)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert out.stderr.startswith(f"secrets: keyring {secrets / 'audit.keys'}: cannot write "
                                     "its new copy")
        assert (secrets / "audit.keys").read_text() == before
    finally:
        subprocess.run(["chattr", "-i", str(secrets)], check=True)


def test_rotations_at_the_same_moment_keep_every_new_key(initialized, tmp_path):
    """Two operators (or a script per keyring host) rotating one keyring at once: each read the
    ring, put its key in front and wrote the file back, so the later write dropped the earlier
    run's key, which a server restarted in between signs with (its links, its audit lines then
    unverifiable)."""
    secrets = _initialized_copy(initialized, tmp_path)
    script = ("import sys; from pathlib import Path; from server.security.secrets import "
              "Secrets; " + AWAIT_GO + "Secrets.load(Path(sys.argv[1]), generate=False, "
              "names=('unsubscribe',), environ={}).rotate('unsubscribe')")
    ran = run_at_once([["-c", script, str(secrets)]] * 6)
    assert [code for code, _ in ran] == [0] * 6, [err for _, err in ran]
    keys = Keyring.parse("unsubscribe", (secrets / "unsubscribe.keys").read_text()).keys
    assert len(keys) == 7


def test_a_rotation_writes_through_a_symlinked_keyring(initialized, tmp_path):
    """A keyring file linked from where the server reads it (`secrets/audit.keys ->
    /srv/vault/audit.keys`): the rotation replaced the link with a regular file, and the file
    it pointed to (which a backup, or another host's link, reads) missed the new key."""
    secrets = _initialized_copy(initialized, tmp_path)
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    (secrets / "audit.keys").rename(vault / "audit.keys")
    (secrets / "audit.keys").symlink_to(vault / "audit.keys")
    run_command("secrets", "rotate", "audit", "--secrets-dir", str(secrets))
    assert (secrets / "audit.keys").is_symlink()
    assert len(Keyring.parse("audit", (vault / "audit.keys").read_text()).keys) == 2


def test_a_server_started_elsewhere_refuses_the_store_naming_the_keyrings_and_generates_none(
        tmp_path, env_with_repo, monkeypatch):
    """The default secrets_dir, var/secrets, is relative to the working directory. A server
    started from another directory over the same data dir generated fresh development keyrings
    there, then refused the store ("written under another 'store-id' key"), leaving them behind
    and not saying where it had looked. It refuses before generating any now, naming the
    keyring file and how its directory was chosen; so does the refusal of a keyring whose
    `store-id` key is another. An empty data dir's first start still generates them."""
    monkeypatch.delenv("TAILOR_SECRETS_DIR", raising=False)
    monkeypatch.delenv(env_name("store-id"), raising=False)
    first, other, data = tmp_path / "first", tmp_path / "other", tmp_path / "data"
    first.mkdir()
    other.mkdir()
    python_path = {"PYTHONPATH": env_with_repo["PYTHONPATH"]}
    ServerProcess(data, cwd=first, env=python_path).stop()  # stamps the store with its key
    assert (first / "var" / "secrets" / "store-id.keys").exists()

    def start_in_other() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "server", "--port", str(free_port()),
                               "--data-dir", str(data)], cwd=other, capture_output=True,
                              text=True, timeout=120, env={**os.environ, **python_path})
    keys = other.resolve() / "var" / "secrets" / "store-id.keys"
    chosen = f"(the default secrets_dir var/secrets, relative to the working directory {other.resolve()})"
    refused = start_in_other()
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert (f"refusing to start: store at {data / 'store'} was written under a 'store-id' key "
            f"and there is none at {keys} {chosen}: no keys were generated") in refused.stderr
    assert not (other / "var").exists()  # no keyring left behind
    keys.parent.mkdir(parents=True, mode=0o700)
    keys.write_text(Keyring.generate("store-id").text())
    keys.chmod(0o600)
    mismatched = start_in_other()
    assert mismatched.returncode != 0
    assert (f"store at {data / 'store'} was written under another 'store-id' key: its records "
            f"cannot be found with this one read from {keys} {chosen}") in mismatched.stderr, \
        mismatched.stderr[-2000:]


def test_a_start_over_an_unfinished_restore_generates_no_keyring(tmp_path, env_with_repo, monkeypatch):
    """A restore killed midway leaves `.restoring` in the data dir (maybe no `store/` yet); a
    start is refused there. That refusal came after the secrets were loaded: a loopback start
    without keyrings generated development ones first, which the restored store (stamped
    under the deployment's `store-id` key) would then be refused under. Refused before now."""
    monkeypatch.delenv("TAILOR_SECRETS_DIR", raising=False)
    monkeypatch.delenv(env_name("store-id"), raising=False)
    cwd, data = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    (data / ".restoring").mkdir(parents=True)
    refused = subprocess.run([sys.executable, "-m", "server", "--port", str(free_port()),
                              "--data-dir", str(data)], cwd=cwd, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": env_with_repo["PYTHONPATH"]})
    assert refused.returncode in (1, 2), refused.stderr[-2000:]
    assert f"a restore into {data} did not finish" in refused.stderr
    assert not (cwd / "var").exists()  # no keyring generated


def test_rotate_key_refused_under_another_key_names_the_file_it_read(tmp_path, monkeypatch):
    """rotate-key reads the keyring files only (TAILOR_SECRET_* are not its keys): refused
    under another 'store-id' key, it named TAILOR_SECRET_STORE_ID when that was set, a key it
    had not read, instead of the file it had."""
    monkeypatch.delenv(env_name("store-id"), raising=False)
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    asyncio.run(_served_once(data, secrets))  # generates the keyrings, stamps the store
    deployment = (secrets / "store-id.keys").read_text()
    (secrets / "store-id.keys").write_text(Keyring.generate("store-id").text())
    refused = run_command("rotate-key", "--data-dir", str(data), "--secrets-dir",
                          str(secrets), check=False, env={env_name("store-id"): deployment})
    assert refused.returncode != 0
    assert (f"cannot be found with this one read from {(secrets / 'store-id.keys').absolute()} "
            f"(secrets_dir from --secrets-dir or the config file)") in refused.stderr, refused.stderr[-2000:]


async def _served_once(data: Path, secrets: Path) -> None:
    """A loopback server in this process started and stopped on `data`, its keyrings in
    `secrets` (generated at its first start, as `python -m server`'s are: the same start code;
    a process here cost ~2-3 s of CPU to stamp a store)."""
    from server.config import Settings
    async with serving(Settings(port=0, data_dir=data, secrets_dir=secrets, lmdb_sync=False,
                                grace_seconds=1.0)):
        pass


def test_secrets_dir_none_is_the_environment_only_from_a_variable_a_file_or_a_flag(tmp_path,
                                                                                   monkeypatch):
    """`secrets_dir = None` ("the environment only") could be set from no variable and no
    file (neither can say None): `TAILOR_SECRETS_DIR=none` was a directory ./none."""
    from server.config import load_settings
    monkeypatch.setenv("TAILOR_SECRETS_DIR", "none")
    assert load_settings().secrets_dir is None
    monkeypatch.setenv("TAILOR_SECRETS_DIR", "./none")  # a directory of that name
    assert load_settings().secrets_dir == Path("none")
    monkeypatch.delenv("TAILOR_SECRETS_DIR")
    config = tmp_path / "tailor.toml"
    config.write_text('secrets_dir = "none"\n')
    assert load_settings(config).secrets_dir is None
    (tmp_path / "none").mkdir()
    Secrets.load(tmp_path / "none", generate=True, names=("user-id",))  # a file it must not read
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def ref(**extra):  # run where ./none holds a keyring the word must not read
        return subprocess.run([sys.executable, "-m", "server", "audit", "ref", "--user-id", "u1",
                               "--secrets-dir", "none"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**env, **extra})
    out = ref()
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "audit: secret 'user-id' is missing: set TAILOR_SECRET_USER_ID (secrets_dir is none: "
        "every keyring comes from the environment, none is generated)"]
    key = base64.b64encode(b"k" * 32).decode()
    out = ref(TAILOR_SECRET_USER_ID=f"k1:{key}")
    assert out.returncode == 0 and out.stdout.startswith("u:"), out.stderr


@pytest.mark.parametrize("action", [["init"], ["rotate", "audit"]])
def test_commands_that_write_keyring_files_refuse_the_environment_only(tmp_path, action):
    """They read no variable: with `--secrets-dir none` they said "set TAILOR_SECRET_AUDIT"
    even when it was set."""
    key = base64.b64encode(b"k" * 32).decode()
    out = run_command("secrets", *action, "--secrets-dir", "none", check=False,
                      env={"TAILOR_SECRET_AUDIT": f"k1:{key}"})
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "secrets: secrets_dir is none (the environment only), and this command writes keyring "
        "files: give --secrets-dir DIR, or change an environment keyring where it is set"]
