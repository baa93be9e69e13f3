"""The audit log's MAC chain: verification, tampering, rotation, retention, concurrent writers."""
import json
import multiprocessing as mp

from server.security.audit import AuditLog, audit_files, verify_chain
from server.security.secrets import Keyring
from server.security.userref import user_ref
from tests.conftest import run_module

RING = Keyring.parse("audit", "k1:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=")


def _fill(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.record("svc:ops", "/tailor.v1.ProfileService/DeleteProfile", f"user-{i}", "OK", f"req-{i}")


def test_the_chain_verifies_and_targets_are_keyed_hashes(tmp_path):
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 5)
    result = verify_chain(tmp_path / "audit", RING)
    assert result.ok and result.lines == 5 and result.files == 1
    entries = [json.loads(line) for line in log.tail(10)]
    assert [e["request_id"] for e in entries] == [f"req-{i}" for i in range(5)]
    assert entries[2]["target"] == user_ref("user-2")
    assert "user-2" not in (tmp_path / "audit" / "audit-000001.jsonl").read_text()


def test_editing_one_line_breaks_the_chain_at_that_line(tmp_path):
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 6)
    path = tmp_path / "audit" / "audit-000001.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"status":"OK"', '"status":"PERMISSION_DENIED"')
    path.write_text("\n".join(lines) + "\n")
    result = verify_chain(tmp_path / "audit", RING)
    assert not result.ok and result.first_broken == "audit-000001.jsonl:4" and result.lines == 3


def test_a_chain_rebuilt_without_the_key_does_not_verify(tmp_path):
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 3)
    forger = AuditLog(tmp_path / "forged", Keyring.generate("audit", "k1"))
    _fill(forger, 3)
    assert not verify_chain(tmp_path / "forged", RING).ok


def test_rotation_keeps_one_chain_across_files(tmp_path):
    log = AuditLog(tmp_path / "audit", RING, max_bytes=1000)
    _fill(log, 30)
    files = audit_files(tmp_path / "audit")
    assert len(files) > 3
    result = verify_chain(tmp_path / "audit", RING)
    assert result.ok and result.lines == 30 and result.files == len(files)
    files[1].unlink()  # a missing middle file is named
    broken = verify_chain(tmp_path / "audit", RING)
    assert not broken.ok and broken.first_broken == files[2].name
    assert broken.reason == f"{files[1].name} is missing"


def test_a_file_starting_a_new_chain_is_caught(tmp_path):
    log = AuditLog(tmp_path / "audit", RING, max_bytes=1000)
    _fill(log, 12)
    first, second = audit_files(tmp_path / "audit")[:2]
    second.write_text(second.read_text().splitlines(keepends=True)[1] * 1)
    result = verify_chain(tmp_path / "audit", RING)
    assert not result.ok and result.first_broken == f"{second.name}:1"


def test_retention_drops_old_files_and_verifies_from_the_head(tmp_path):
    log = AuditLog(tmp_path / "audit", RING, max_bytes=1000, keep_files=2)
    _fill(log, 40)
    files = audit_files(tmp_path / "audit")
    assert len(files) == 2 and files[0].name != "audit-000001.jsonl"
    head = json.loads((tmp_path / "audit" / "audit.head").read_text())
    assert head["file"] == files[0].name
    result = verify_chain(tmp_path / "audit", RING)
    assert result.ok and 0 < result.lines < 40
    assert json.loads(log.tail(1)[0])["request_id"] == "req-39"
    head["prev"] = "0" * 64  # a forged head (no key) fails
    (tmp_path / "audit" / "audit.head").write_text(json.dumps(head))
    bad = verify_chain(tmp_path / "audit", RING)
    assert not bad.ok and bad.first_broken == "audit.head"


def test_retention_without_a_head_is_caught(tmp_path):
    log = AuditLog(tmp_path / "audit", RING, max_bytes=1000, keep_files=2)
    _fill(log, 40)
    (tmp_path / "audit" / "audit.head").unlink()
    assert not verify_chain(tmp_path / "audit", RING).ok


def _writer(directory, start: int, n: int, barrier) -> None:
    log = AuditLog(directory, RING, max_bytes=4000)
    barrier.wait(60)
    _fill(log, n, start)


def test_concurrent_appends_from_two_processes_keep_the_chain_linear(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(tmp_path / "audit", i * 1000, 300, barrier))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    result = verify_chain(tmp_path / "audit", RING)
    assert result.ok and result.lines == 600 and result.files > 1
    ids = [json.loads(line)["request_id"] for line in AuditLog(tmp_path / "audit", RING).tail(1000)]
    assert sorted(ids) == sorted(f"req-{i}" for i in [*range(300), *range(1000, 1300)])


def test_verify_cli_names_the_broken_line(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "audit.keys").write_text(RING.text())
    log = AuditLog(tmp_path / "data" / "audit", RING)
    _fill(log, 4)
    args = ["server", "audit", "verify", "--data-dir", str(tmp_path / "data"), "--secrets-dir", str(secrets)]
    ok = run_module(*args)
    assert json.loads(ok.stdout)["ok"] is True
    path = tmp_path / "data" / "audit" / "audit-000001.jsonl"
    text = path.read_text().replace("svc:ops", "svc:eve", 1)
    path.write_text(text)
    bad = run_module(*args, check=False)
    assert bad.returncode != 0 and "audit-000001.jsonl:1" in bad.stderr


def test_a_torn_last_line_is_named_and_the_log_stays_appendable(tmp_path):
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 3)
    path = tmp_path / "audit" / "audit-000001.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"kid":"k1","method":"/tailor.v1.Prof')  # a crash mid-write
    _fill(log, 2, start=3)
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["request_id"] == "req-4"
    result = verify_chain(tmp_path / "audit", RING)
    assert not result.ok and result.first_broken == "audit-000001.jsonl:4" and result.lines == 3


def test_verify_cli_refuses_a_data_dir_that_does_not_exist(tmp_path):
    """A mistyped --data-dir said `ok: true` (no file, nothing broken) and exited 0."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "audit.keys").write_text(RING.text())
    refused = run_module("server", "audit", "verify", "--data-dir", str(tmp_path / "typo"),
                         "--secrets-dir", str(secrets), check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"no data dir {tmp_path / 'typo'}" in refused.stderr



def test_verify_cli_refuses_a_data_dir_without_an_audit_log(tmp_path):
    """`--data-dir /srv/tailor` for `/srv/tailor/data` (or the default `data` from the wrong
    directory) said `ok: true` with 0 files and exited 0: a server creates `audit/` in its data
    dir at start, so a data dir without one is not the log the auditor meant (or it is gone)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "audit.keys").write_text(RING.text())
    _fill(AuditLog(tmp_path / "srv" / "data" / "audit", RING), 2)
    refused = run_module("server", "audit", "verify", "--data-dir", str(tmp_path / "srv"),
                         "--secrets-dir", str(secrets), check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"no audit log in {tmp_path / 'srv'}" in refused.stderr

def _rotating_writer(directory, n: int, started, max_bytes: int = 2000) -> None:
    log = AuditLog(directory, RING, max_bytes=max_bytes, keep_files=3)
    _fill(log, 5)
    started.set()
    _fill(log, n, 5)


def test_verify_while_a_server_appends_and_drops_files_finds_the_chain_whole(tmp_path):
    """`audit verify` on a live log (the docs say nothing of stopping the servers): it listed
    the files, then read the head and each file, so a rotation dropping the oldest file
    meanwhile, or a line being appended, made it report the intact chain broken ("audit.head
    continues at ...", "not an audit line"). It reads one snapshot taken under the writers' lock."""
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    writer = ctx.Process(target=_rotating_writer, args=(tmp_path / "audit", 4000, started))
    writer.start()
    assert started.wait(60)
    results = []
    while writer.is_alive() and len(results) < 400:
        results.append(verify_chain(tmp_path / "audit", RING))
    writer.join(60)
    assert writer.exitcode == 0 and len(results) > 20
    broken = [(r.first_broken, r.reason) for r in results if not r.ok]
    assert broken == [], broken[:3]
    assert verify_chain(tmp_path / "audit", RING).ok


def test_tail_while_a_server_appends_gives_whole_lines(tmp_path):
    """TailAudit read the newest file while a line was being appended and answered its first
    part as a line (11 of 3,369 tails of a busy log were not JSON)."""
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    writer = ctx.Process(target=_rotating_writer, args=(tmp_path / "audit", 15000, started, 20000))
    writer.start()
    assert started.wait(60)
    log, tails, torn = AuditLog(tmp_path / "audit", RING), 0, []
    while writer.is_alive():
        for line in log.tail(20):
            try:
                json.loads(line)
            except ValueError:
                torn.append(line)
        tails += 1
    writer.join(60)
    assert writer.exitcode == 0 and tails > 100
    assert torn == [], torn[:3]
    assert [json.loads(line)["request_id"] for line in log.tail(3)] == [
        "req-15002", "req-15003", "req-15004"]


def test_verify_and_tail_leave_no_lock_file_behind(tmp_path):
    """Readers take the writers' lock when there is one, and never create it: a root-owned
    lock file left by a verify in a copied log would keep the server from writing there."""
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 2)
    (tmp_path / "audit" / "audit.lock").unlink()
    assert verify_chain(tmp_path / "audit", RING).ok and len(log.tail(5)) == 2
    assert not (tmp_path / "audit" / "audit.lock").exists()


def test_removing_the_newest_lines_is_caught(tmp_path):
    """A MAC chain alone cannot tell a log whose newest lines were cut off from one that
    ended there: `audit.tip` (the newest line's file and MAC, MACed, rewritten with each
    append) anchors the end, and verify names the cut."""
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 6)
    path = tmp_path / "audit" / "audit-000001.jsonl"
    assert verify_chain(tmp_path / "audit", RING).ok
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4]))  # the newest two lines removed
    result = verify_chain(tmp_path / "audit", RING)
    assert not result.ok and result.lines == 4 and result.first_broken == "audit.tip"
    assert "audit-000001.jsonl" in result.reason and "removed" in result.reason
    path.write_bytes(b"")  # every line removed
    assert not verify_chain(tmp_path / "audit", RING).ok
    # the CLI exits 1 naming it
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "audit.keys").write_text(RING.text())
    data = tmp_path / "data"
    log = AuditLog(data / "audit", RING)
    _fill(log, 3)
    newest = data / "audit" / "audit-000001.jsonl"
    newest.write_bytes(b"".join(newest.read_bytes().splitlines(keepends=True)[:2]))
    bad = run_module("server", "audit", "verify", "--data-dir", str(data), "--secrets-dir",
                     str(secrets), check=False)
    assert bad.returncode == 1 and "audit.tip" in bad.stderr, bad.stderr


def test_removing_the_newest_file_is_caught(tmp_path):
    log = AuditLog(tmp_path / "audit", RING, max_bytes=1000)
    _fill(log, 30)
    files = audit_files(tmp_path / "audit")
    assert len(files) > 2
    files[-1].unlink()
    result = verify_chain(tmp_path / "audit", RING)
    assert not result.ok and result.first_broken == "audit.tip" and files[-1].name in result.reason


def test_a_deleted_or_forged_tip_is_caught(tmp_path):
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 3)
    tip = tmp_path / "audit" / "audit.tip"
    record = json.loads(tip.read_text())
    record["mac"] = "0" * 64  # rewritten without the key
    tip.write_text(json.dumps(record))
    assert not verify_chain(tmp_path / "audit", RING).ok
    tip.unlink()
    result = verify_chain(tmp_path / "audit", RING)
    assert not result.ok and result.first_broken == "audit.tip"
    _fill(log, 1, start=3)  # the next append anchors the end again
    assert verify_chain(tmp_path / "audit", RING).ok


def test_a_tip_one_line_behind_still_verifies(tmp_path):
    """A crash between a line's append and the tip's rewrite leaves the tip on the line
    before: the log is whole, so that is no failure (only lines up to the tip are anchored)."""
    log = AuditLog(tmp_path / "audit", RING)
    _fill(log, 3)
    tip = tmp_path / "audit" / "audit.tip"
    before = tip.read_bytes()
    _fill(log, 1, start=3)
    tip.write_bytes(before)
    assert verify_chain(tmp_path / "audit", RING).ok


def test_a_file_closed_on_a_torn_line_still_goes_by_age(tmp_path):
    """A crash or a full disk cut the line that filled a file; the next append started a new
    file. Every retention sweep then failed on that file's last line (not JSON): audit files
    were kept past `audit_retention_days` for good. Its age is now the file's own time."""
    import os
    import time
    log = AuditLog(tmp_path / "audit", RING, max_bytes=600)
    _fill(log, 1)
    with open(audit_files(tmp_path / "audit")[-1], "ab") as torn:
        torn.write(b'{"kid":"k1","mac":"' + b"7" * 600)  # cut mid-line, past max_bytes
    _fill(log, 1, start=1)
    first, _ = audit_files(tmp_path / "audit")
    written = time.time() - 86400
    os.utime(first, (written, written))
    assert log.drop_before(written - 1) == 0  # newer than the cutoff: kept
    assert log.drop_before(written + 1) == 1
    assert [p.name for p in audit_files(tmp_path / "audit")] == ["audit-000002.jsonl"]
    assert verify_chain(tmp_path / "audit", RING).ok  # the head carries the chain on
