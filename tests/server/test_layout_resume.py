"""A layout migration cut short (a kill, a failing step, a probe that gives up on a big store)
keeps the chunks it committed, keeps older binaries away from the half-migrated store, and the
next open goes on where it stopped instead of beginning again."""
import dataclasses

import pytest

from server.errors import FailedPrecondition
from server.store import KINDS, Store
from server.store import migrate as store_migrate
from server.store.backup import check_copy
from tests.server.test_store_layouts import _fixture_store, add_channel, bumped, records, v1_dir  # noqa: F401


class Interrupted(Exception):
    pass


def counting(fail_at: int | None = None):
    """`add_channel` that counts its calls and raises at call `fail_at` (1-based): a process
    stopped in that record's chunk."""
    calls = []

    def step(raw: bytes) -> bytes:
        calls.append(raw)
        if len(calls) == fail_at:
            raise Interrupted
        return add_channel(raw)
    step.calls = calls
    return step


@pytest.fixture
def today_dir(v1_dir):  # noqa: F811
    """The v1 fixture in today's layouts: only the test's bump is left to do."""
    Store(v1_dir, sync=False).close()
    return v1_dir


def test_a_migration_cut_short_goes_on_where_it_stopped(today_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(store_migrate, "CHUNK", 1)  # a transaction per decision key
    whole = _fixture_store(tmp_path / "whole")
    Store(whole, sync=False).close()
    once = counting()
    store = Store(whole, sync=False, layouts=bumped("decision", once))
    expected = records(store, "decisions")
    store.close()
    assert len(once.calls) == 2  # two decision records

    cut = counting(fail_at=2)
    with pytest.raises(Interrupted):
        Store(today_dir, sync=False, layouts=bumped("decision", cut))
    with pytest.raises(FailedPrecondition, match=r"decision \(stored 3, known 2\)"):
        Store(today_dir, sync=False)  # the binary from before the bump: half-migrated, refused
    with pytest.raises(FailedPrecondition, match="migration under way"):
        Store(today_dir, readonly=True, layouts=bumped("decision", add_channel))
    rest = counting()
    store = Store(today_dir, sync=False, layouts=bumped("decision", rest))
    assert len(rest.calls) == 1  # only the record whose chunk was not committed
    assert store.migrated == {"decision": 2}
    assert records(store, "decisions") == expected  # as an uninterrupted migration left it
    assert store.get("meta", store_migrate.PROGRESS_KEY) is None
    store.close()
    again = counting()
    Store(today_dir, sync=False, layouts=bumped("decision", again)).close()
    assert again.calls == []


def test_a_migration_failing_in_its_first_chunk_leaves_the_store_as_it_was(today_dir):
    cut = counting(fail_at=1)
    with pytest.raises(Interrupted):
        Store(today_dir, sync=False, layouts=bumped("decision", cut))
    store = Store(today_dir, sync=False, layouts=KINDS)  # nothing stamped: today's binary opens it
    assert store.migrated == {}
    assert store.get("meta", store_migrate.PROGRESS_KEY) is None
    store.close()


def test_a_newer_releases_migration_under_way_is_refused_with_the_newer_tailor_line(
        today_dir, monkeypatch):
    # A newer release adds a kind (here: a second name for the decision records) and is killed
    # midway through its rewrite; an operator rolls back. Its progress names a kind unknown here.
    monkeypatch.setattr(store_migrate, "CHUNK", 1)
    decision = next(k for k in KINDS if k.name == "decision")
    widget = dataclasses.replace(decision, name="widget", version=2, first=1,
                                 steps={1: counting(fail_at=2)})
    with pytest.raises(Interrupted):
        Store(today_dir, sync=False, layouts=(*KINDS, widget))
    before = _mdb_bytes(today_dir)
    with pytest.raises(FailedPrecondition, match=r"newer Tailor.*widget"):
        Store(today_dir, sync=False)
    with pytest.raises(FailedPrecondition, match=r"newer Tailor.*widget"):
        Store(today_dir, readonly=True)
    with pytest.raises(FailedPrecondition, match=r"newer Tailor.*widget"):
        check_copy(today_dir)  # a restore of its backup, refused as its start would be
    assert _mdb_bytes(today_dir) == before  # refused, nothing changed


def _mdb_bytes(path) -> bytes:
    return (path / "data.mdb").read_bytes()


def test_a_long_migration_says_how_far_it_got(today_dir, monkeypatch, caplog):
    """A kind being rewritten logged nothing until it was done (~14 minutes for 10 million
    records): an operator watching `migrate` or a start could not tell a migration from a hang.
    It says how far it got at most every `PROGRESS_SECONDS` (0 here: after each chunk)."""
    monkeypatch.setattr(store_migrate, "CHUNK", 1)
    monkeypatch.setattr(store_migrate, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="tailor.store"):
        Store(today_dir, sync=False, layouts=bumped("decision", add_channel)).close()
    lines = [r.getMessage() for r in caplog.records]
    assert "migrating decision records from layout 2 to 3: 1 so far" in lines, lines
    assert lines[-1] == "migrated 2 decision records from layout 2 to 3", lines
