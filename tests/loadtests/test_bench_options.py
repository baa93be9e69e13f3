"""A bench option that cannot work is refused when it is parsed (argparse's one usage error,
exit 2), before the minutes of training and measuring: a --duration of 0 ended the run on a
ZeroDivisionError traceback, a --concurrency of 0 printed figures of no asked-for load, a
--server-src that is no source tree a FileNotFoundError traceback, and capacity's --update of
a file without its markers a traceback after every measurement."""
import json
import subprocess
import sys
import textwrap

import pytest

from loadtests.capacity import BEGIN, END
from tests.conftest import ROOT, run_module

USAGE_ERRORS = [
    (("bench_campaigns", "--duration", "0"), "argument --duration: 0 is not a number above 0"),
    (("bench", "--concurrency", "0"), "argument --concurrency: 0 is not a number above 0"),
    (("bench_messages", "--duration", "inf"), "argument --duration: inf is not a number above 0"),
    (("bench_campaigns", "--server-src", "/nonexistent"),
     "argument --server-src: /nonexistent is not a Tailor source tree (no server/__main__.py in it)"),
    (("bench_profiles", "--compare-src", str(ROOT / "docs")),
     f"argument --compare-src: {ROOT / 'docs'} is not a Tailor source tree"),
    (("bench_campaigns", "--rounds", "0", "--duration", "1", "--concurrency", "2", "--arms", "3",
      "--no-sync"), "argument --rounds: 0 is not a number above 0"),  # ran: ZeroDivisionError
    (("bench_contact", "--rounds", "0"), "argument --rounds: 0 is not a number above 0"),
    (("bench_messages", "--rounds", "0"), "argument --rounds: 0 is not a number above 0"),
    (("bench_tls", "--rounds", "0"), "argument --rounds: 0 is not a number above 0"),
    (("bench_start", "--rounds", "0"), "argument --rounds: 0 is not a number above 0"),
    (("bench_profiles", "--read-seconds", "0", "--events", "600", "--users", "50", "--profiles",
      "40", "--parts"), "argument --read-seconds: 0 is not a number above 0"),  # ran: QPS xnan
    (("bench_profiles", "--read-concurrency", "0", "--events", "600", "--users", "50",
      "--profiles", "40", "--parts"), "argument --read-concurrency: 0 is not a number above 0"),
    # counts taken as given: a ZeroDivisionError or numpy ValueError traceback, or nothing measured
    (("bench_auth", "--calls", "0"), "argument --calls: 0 is not a number above 0"),
    (("bench_seen_ingest", "--batches", "0"), "argument --batches: 0 is not a number above 0"),
    (("bench_impression_flush", "--items", "0"), "argument --items: 0 is not a number above 0"),
    (("bench_decision_log", "--rounds", "0"), "argument --rounds: 0 is not a number above 0"),
    (("bench_decision_log", "--batch", "0"), "argument --batch: 0 is not a number above 0"),
    (("bench_decision_log", "--paired", "--mode", "plan"),
     "--paired compares ChooseVariant-sized transactions: --mode choose or choose-ids"),
    (("bench_decision_log", "--paired", "--pairs", "1"),
     "argument --pairs: 1 is too few for an interval (2 or more)"),
    (("bench", "--users", "-1"), "argument --users: -1 is not a number above 0"),
    (("capacity", "--update", "README.md"), "--update README.md: no capacity table markers"),
    (("capacity", "--update", "missing.md"), "--update missing.md: no such file or directory"),
]
"""(`python -m loadtests.<first>` and its arguments, the last stderr line expected)."""

AS_PYTHON_M = textwrap.dedent("""
    import contextlib, io, json, runpy, sys, traceback
    results = []
    for args in json.loads(sys.argv[1]):
        err, code = io.StringIO(), 0
        sys.argv = [f"loadtests.{args[0]}", *args[1:]]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                runpy.run_module(f"loadtests.{args[0]}", run_name="__main__", alter_sys=True)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
        results.append((code, err.getvalue()))
    print(json.dumps(results))
""")
"""Runs each of its argument lists as `python -m` runs a module (`runpy`, as `__main__`), one
after the other in one interpreter: (exit code, stderr) of each, as JSON. Each `python -m
loadtests.<bench>` of its own paid the same imports (numpy, grpc, the protos) again."""


@pytest.fixture(scope="module")
def usage_errors() -> dict[tuple, tuple[int, str]]:
    """(exit code, stderr) of each of `USAGE_ERRORS`' commands, run in one child process."""
    argvs = [list(args) for args, _ in USAGE_ERRORS]
    proc = subprocess.run([sys.executable, "-c", AS_PYTHON_M, json.dumps(argvs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {args: tuple(result) for (args, _), result in
            zip(USAGE_ERRORS, json.loads(proc.stdout.splitlines()[-1]))}


@pytest.mark.parametrize("args, line", USAGE_ERRORS)
def test_a_bench_option_that_cannot_work_is_a_usage_error(usage_errors, args, line):
    bench = args[0]
    returncode, stderr = usage_errors[args]
    assert returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert f"python -m loadtests.{bench}: error: {line}" in stderr.splitlines()[-1], stderr


def test_a_source_tree_is_taken(tmp_path):
    """The checkout itself passes (the parse only; --help stops before any run)."""
    proc = run_module("loadtests.bench_campaigns", "--server-src", str(ROOT), "--help")
    assert "--server-src" in proc.stdout


def test_capacity_refuses_an_update_file_it_would_refuse_after_measuring(tmp_path):
    """The up-front check was a copy of update_file's, looser: an end marker before the
    begin marker passed it, and the run ended on update_file's ValueError traceback after
    every measurement. Both read the markers with one function now."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{END}\nmiddle\n{BEGIN}\nold\n")
    proc = run_module("loadtests.capacity", "--update", str(doc), "--items", "60", "--users", "60",
                      "--duration", "0.2", "--work", str(tmp_path / "work"), check=False,
                      timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == (f"python -m loadtests.capacity: error: --update {doc}: "
                                            f"no capacity table markers ({BEGIN} ... {END})")
    assert doc.read_text() == f"intro\n{END}\nmiddle\n{BEGIN}\nold\n"
