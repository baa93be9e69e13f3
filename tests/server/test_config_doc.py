"""docs/operations.md's settings table is what `python -m server config-doc` writes today."""
from server.config import Settings
from server.config_doc import BEGIN, END, render_table, variables
from tests.conftest import ROOT, run_module

OPERATIONS = ROOT / "docs" / "operations.md"


def test_the_operations_table_is_current():
    text = OPERATIONS.read_text()
    table = text.split(BEGIN + "\n", 1)[1].split(END, 1)[0]
    assert table == render_table(), ("docs/operations.md is stale: run "
                                     "`python -m server config-doc --update docs/operations.md`")


def test_the_table_has_every_field_its_flag_and_its_docstring():
    table = run_module("server", "config-doc").stdout
    rows = [r for r in table.splitlines() if r.startswith("| `TAILOR_")]
    assert [r.split("`")[1] for r in rows] == [v for v, _, _ in variables()]
    assert "| `TAILOR_LIMITS__ID_BYTES` |  | `128` |" in table
    port = next(r for r in rows if r.startswith("| `TAILOR_PORT`"))
    assert "`--port`" in port and "`50051`" in port and "gRPC port." in port
    assert "| `TAILOR_LMDB_SYNC` |  | `true` | fsync every commit" in table


def test_update_rewrites_only_between_the_markers(tmp_path):
    doc = tmp_path / "ops.md"
    doc.write_text(f"before\n{BEGIN}\n| stale |\n{END}\nafter\n")
    out = run_module("server", "config-doc", "--update", str(doc)).stdout
    assert "updated" in out
    assert doc.read_text() == f"before\n{BEGIN}\n{render_table()}{END}\nafter\n"
    assert "up to date" in run_module("server", "config-doc", "--update", str(doc)).stdout


def test_each_default_as_written_is_what_its_variable_gives(monkeypatch):
    rows = [r.split(" | ") for r in render_table().splitlines() if r.startswith("| `TAILOR_")]
    paths = {v: path for v, path, _ in variables()}
    for variable, _, default, _ in rows:
        name = variable.strip("|` ")
        if default == "unset":
            continue
        monkeypatch.setenv(name, default.strip("`"))
        got, want = Settings(), Settings.model_construct()
        for attr in paths[name]:
            got, want = getattr(got, attr), getattr(want, attr)
        assert got == want, name
        monkeypatch.delenv(name)


def test_update_of_a_file_it_cannot_rewrite_is_one_line(tmp_path):
    """A file without the markers (a typo'd path to another doc) was a ValueError traceback;
    a missing file said '[Errno 2] No such file or directory: ...'. Both leave the file as it was."""
    other = tmp_path / "README.md"
    other.write_text("# not the operations doc\n")
    proc = run_module("server", "config-doc", "--update", str(other), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == f"config-doc: {other} has no settings table markers ({BEGIN} ... {END})\n"
    assert other.read_text() == "# not the operations doc\n"
    missing = tmp_path / "missing.md"
    proc = run_module("server", "config-doc", "--update", str(missing), check=False)
    assert (proc.returncode, proc.stderr) == (1, f"config-doc: {missing}: no such file or directory\n")
