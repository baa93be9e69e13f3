"""The capacity table: calls per second per core from CPU per call, per event for batches, and
its section of a file rewritten between the markers (the rest left as it was)."""
import re

import pytest

from loadtests.capacity import BEGIN, END, Row, render_table, update_file
from tests.conftest import ROOT, run_module


def test_the_table_turns_cpu_per_call_into_calls_per_second_per_core():
    table = render_table([Row("Ping", 900.0, 1.5, 250.0),
                          Row("TrackEvents (batch of 100)", 50.0, 20.0, 4000.0, 100, "event")], "cap")
    lines = table.splitlines()
    assert lines[0] == "cap"
    assert "| Ping | 250 | 4,000 | 900 | 1.5 |" in lines  # 1e6 / 250 us
    assert "| TrackEvents (batch of 100) | 4000 | 250 | 50 | 20.0 |" in lines
    assert "| ↳ per event | 40.0 | 25,000 events/s | 5,000 events/s | |" in lines  # 4000 / 100


def test_update_rewrites_only_the_marked_section(tmp_path):
    doc = tmp_path / "ops.md"
    doc.write_text(f"# Ops\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    assert update_file(doc, "new table\n")
    assert doc.read_text() == f"# Ops\nbefore\n{BEGIN}\nnew table\n{END}\nafter\n"
    assert not update_file(doc, "new table\n")
    (tmp_path / "bare.md").write_text("# nothing marked\n")
    with pytest.raises(ValueError, match="capacity table markers"):
        update_file(tmp_path / "bare.md", "x\n")


def test_the_command_the_marker_shows_runs_as_written():
    """The marker (in docs/operations.md) showed `--update` without the file it takes: argparse
    refused the command as written."""
    command = re.search(r"`python -m (\S+) ([^`]*)`", BEGIN)
    proc = run_module(command[1], *command[2].split(), "--help", check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_operations_guide_holds_a_measured_table():
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.partition(BEGIN)[2].partition(END)[0]
    for rpc in ("Ping", "Recommend k=10", "ChooseVariant", "TrackEvents", "per event", "GetProfile",
                "ComposeMessage"):
        assert f"| {rpc}" in section or f"| ↳ {rpc}" in section, rpc
    assert "load average" in section


def test_trackevents_batches_that_would_repeat_fail_the_run(demo_bundle, tmp_path, monkeypatch):
    """The TrackEvents row must measure new events: a run that outlasts its batches sends them
    again, and the server skips a repeated batch's events as duplicates (a cheaper call than
    the row names). With 3 batches any run outlasts them. The setup's live profiles are for
    the GetProfile and ComposeMessage rows, after TrackEvents: 20 of them rather than 2,000
    (6,000 calls, most of this test's time), the rows before TrackEvents measured as before."""
    from loadtests import capacity

    bundles = tmp_path / "items2000-users2000-days30" / "bundles"
    bundles.mkdir(parents=True)
    (bundles / demo_bundle.name).symlink_to(demo_bundle)
    few = capacity.track_payloads
    setup = capacity.setup
    monkeypatch.setattr(capacity, "setup", lambda target, bundle: setup(target, bundle, n_live=20))
    monkeypatch.setattr(capacity, "track_payloads", lambda users, items: few(users, items, n=3))
    with pytest.raises(RuntimeError, match="TrackEvents .*3 batches"):
        capacity.main(["--work", str(tmp_path), "--duration", "0.3", "--concurrency", "2"])
