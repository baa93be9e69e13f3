"""`attribute` CLI, run as a subprocess on small files written by the tests."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CA_TEXT = """path;total_conversions;total_conversion_value;total_null
a > b;1;10;1
b;1;4;0
a;0;0;1
"""


def entry_points():
    yield ["-m", "training.attribute"]
    if (ROOT / "training" / "__main__.py").exists():
        yield ["-m", "training", "attribute"]


def cli(args, entry=("-m", "training.attribute")):
    return subprocess.run([sys.executable, *entry, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def ca_file(tmp_path):
    path = tmp_path / "paths.csv"
    path.write_text(CA_TEXT)
    return path


@pytest.mark.parametrize("entry", list(entry_points()))
def test_markov_json_matches_hand_solution(ca_file, entry):
    out = cli([ca_file, "--model", "markov", "--format", "channelattribution", "--json"], entry)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["credits"]["a"]["conversions"] == pytest.approx(0.8)
    assert doc["credits"]["b"]["conversions"] == pytest.approx(1.2)
    assert doc["credits"]["b"]["value"] == pytest.approx(8.4)
    assert doc["removal_effects"]["a"] == pytest.approx(2 / 3)


def test_table_output(ca_file):
    out = cli([ca_file, "--model", "first"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["channel", "conversions", "share", "value"]
    assert lines[2].split() == ["a", "1.0000", "50.00%", "10.0000"]
    assert lines[-1].split() == ["total", "2.0000", "14.0000"]


def test_tailor_jsonl_time_decay(tmp_path):
    path = tmp_path / "paths.jsonl"
    rows = [{"path": ["email", "web"], "timestamps": [0, 86400], "conversions": 3, "value": 9},
            {"path": "web", "timestamps": [5], "nulls": 2}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = cli([path, "--model", "time_decay", "--half-life-days", "1", "--json"])
    assert out.returncode == 0, out.stderr
    credits = json.loads(out.stdout)["credits"]
    assert credits["email"]["conversions"] == pytest.approx(1.0)  # weights 1/2 : 1 over 3
    assert credits["web"]["conversions"] == pytest.approx(3.0)


@pytest.mark.parametrize("args, message", [
    (["--model", "markov", "--order", "7"], "order: must be an integer from 1 to 4"),
    (["--model", "time_decay"], "needs touch timestamps"),
])
def test_bad_input_exits_2_with_message(ca_file, args, message):
    out = cli([ca_file, *args])
    assert out.returncode == 2
    assert message in out.stderr


def test_plot_draws_every_model_that_can_run(ca_file, tmp_path):
    from tests.pictures import check_png

    png = tmp_path / "credits.png"
    out = cli([ca_file, "--model", "markov", "--plot", png], ("-m", "training", "attribute"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[0] == "channel"   # the table is still printed
    assert "--plot: time_decay left out: " in out.stderr        # no timestamps in this format
    check_png(png.read_bytes(), (900, 450))


def test_plot_credits_are_each_models_conversions(ca_file):
    from training.attribute import read_paths
    from training.attribution_plot import all_credits

    credits, skipped = all_credits(read_paths(ca_file))
    assert set(skipped) == {"time_decay"}
    assert credits["first"] == {"a": 1.0, "b": 1.0}     # a > b converts once, b once
    assert credits["last"] == {"a": 0.0, "b": 2.0}
    assert credits["linear"] == pytest.approx({"a": 0.5, "b": 1.5})
    assert credits["markov"] == pytest.approx({"a": 0.8, "b": 1.2})


def test_plot_to_an_unwritable_place_exits_2(ca_file, tmp_path):
    out = cli([ca_file, "--model", "first", "--plot", tmp_path / "missing" / "c.png"])
    assert out.returncode == 2 and "error: --plot:" in out.stderr


@pytest.mark.parametrize("text", ["a >  > b;1;0;0\nb;1;0;0\n", "b;1;0;0\na > b >;1;0;0\n",
                                  '{"path": "a > > b"}\n', '{"path": ["a", " "]}\n'])
def test_an_empty_channel_name_is_refused_not_credited(tmp_path, text):
    # "a >  > b" made a channel named "" that took a third of the conversion (linear); the
    # server refuses such paths (channelattribution_rows: empty channel name)
    path = tmp_path / "paths.txt"
    path.write_text(text)
    out = cli([path, "--model", "linear"])
    assert out.returncode == 2, out.stdout
    assert "empty channel name" in out.stderr and "path " in out.stderr


@pytest.mark.parametrize("line, message", [
    # a misspelt key was ignored: conversions defaulted to 1, nulls to 0 (the client refuses it)
    ('{"path": "a > b", "conversion": 0, "null": 5}', "line 2: unknown key 'conversion'"),
    ('{"path": "a > b", "conversions": "x"}', "line 2: key 'conversions': expected a number"),
    ('{"path": "a", "value": -3}', "line 2: key 'value': must be finite and >= 0"),
    ('{"path": 7}', "line 2: key 'path'"),
    ("[1, 2]", "line 2: expected a JSON object"),
])
def test_tailor_lines_are_checked_key_by_key(tmp_path, line, message):
    path = tmp_path / "paths.jsonl"
    path.write_text('{"path": ["a"]}\n' + line + "\n")
    out = cli([path, "--model", "linear"])
    assert out.returncode == 2, out.stdout
    assert message in out.stderr, out.stderr


def test_a_sampled_shapley_says_its_credits_are_estimates(tmp_path):
    # past 20 channels the RATE form samples permutations: the table printed the estimates as
    # if exact (no standard error, no word of sampling) and the JSON left out the value's
    # standard error and the permutations drawn
    path = tmp_path / "wide.csv"
    path.write_text("".join(f"c{i} > c{(i * 7) % 25};{i % 3};{i};{i % 2}\n" for i in range(60)))
    args = [path, "--model", "shapley", "--shapley-form", "rate", "--samples", "200"]
    out = cli(args)
    assert out.returncode == 0, out.stderr
    head, *_, last = out.stdout.splitlines()
    assert head.split()[-1] == "stderr"
    assert last == "sampled: 200 permutations; the credits are estimates (95%: within 1.96 stderr)"
    doc = json.loads(cli([*args, "--json"]).stdout)
    assert doc["samples"] == 200 and set(doc["value_stderr"]) == set(doc["credits"])
    narrow = tmp_path / "narrow.csv"
    narrow.write_text(CA_TEXT)
    exact = cli([narrow, "--model", "shapley", "--shapley-form", "rate"])
    assert exact.returncode == 0 and "sampled" not in exact.stdout and "stderr" not in exact.stdout


def test_ordered_shapley_prints_the_credit_by_rank_of_first_touch(tmp_path):
    # `--shapley-form ordered` printed exactly what `counts` prints: the breakdown by rank it
    # exists for was in neither the table nor the JSON. By hand: "a" alone (1 conversion,
    # value 10) and "b" alone (1, 20) credit rank 0; "a > b" (2, 40) splits equally, a at
    # rank 0 and b at rank 1
    path = tmp_path / "paths.csv"
    path.write_text("a;1;10;1\nb;1;20;3\na > b;2;40;0\n")
    args = [path, "--model", "shapley", "--shapley-form", "ordered"]
    doc = json.loads(cli([*args, "--json"]).stdout)
    assert doc["rank_conversions"] == {"a": [2.0, 0.0], "b": [1.0, 1.0]}
    assert doc["rank_value"] == {"a": [30.0, 0.0], "b": [20.0, 20.0]}
    out = cli(args)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("conversions by rank of first touch:")
    assert lines[at + 1].split() == ["channel", "rank", "0", "rank", "1"]
    assert [line.split() for line in lines[at + 3:]] == [["a", "2.0000", "0.0000"],
                                                         ["b", "1.0000", "1.0000"]]
    assert "rank" not in cli([path, "--model", "shapley"]).stdout


def test_table_pads_wide_and_combining_channel_names_by_terminal_columns(tmp_path):
    # "日本" takes 4 terminal columns, "e\u0301x" (e, combining acute, x) 2: the name column is
    # 7 wide (the header's "channel"), so they get 3 and 5 spaces, then the 2-space gap. Padded
    # by len() they got 5 and 4, and the numbers after a CJK or emoji name stood out of line
    path = tmp_path / "wide.csv"
    path.write_text("日本;1;1;0\nab > 日本;1;1;1\ne\u0301x;1;0;0\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "training.attribute", str(path), "--model",
                          "linear"], cwd=ROOT, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = out.stdout.decode("utf-8").splitlines()[2:5]
    assert rows == ["日本" + " " * 5 + f"{1.5:>12.4f}  {0.5:>7.2%}  {1.5:>14.4f}",
                    "e\u0301x" + " " * 7 + f"{1.0:>12.4f}  {1 / 3:>7.2%}  {0.0:>14.4f}",
                    "ab" + " " * 7 + f"{0.5:>12.4f}  {1 / 6:>7.2%}  {0.5:>14.4f}"]


@pytest.mark.parametrize("row, message", [
    ("b;1;-2;0", "line 4: value: must be finite and >= 0, got -2.0"),
    ("b;nan;0;0", "line 4: conversions: must be finite and >= 0, got nan"),
    ("b;1;0;-1", "line 4: nulls: must be finite and >= 0, got -1.0"),
    # a fifth column was ignored, whatever it held
    ("b;1;0;0;7", "line 4: 5 columns, at most 4 (path;conversions;value;nulls)"),
])
def test_a_bad_channelattribution_count_is_named_by_its_line(tmp_path, row, message):
    # header, a blank line, a good row, then the bad one on line 4: it said "value: must be
    # non-negative (path 1 has -2.0)", counting paths from 0 past the header and blank line
    path = tmp_path / "paths.csv"
    path.write_text(f"path;total_conversions;total_conversion_value;total_null\n\na;1;1;0\n{row}\n")
    out = cli([path, "--model", "first"])
    assert out.returncode == 2, out.stdout
    assert out.stderr.strip() == f"error: {message}"


def long_path(tmp_path, touches=5000, channels=6):
    path = tmp_path / "long.csv"
    path.write_text(" > ".join(f"c{(i * 7 + i // 3) % channels}" for i in range(touches))
                    + ";1;1;0\n")
    return path


def test_the_attribution_stops_past_its_seconds_with_exit_3(tmp_path):
    # the command had no bound: Markov at order 4 on one path of 200,000 touches ran past 100 s
    # (1M touches: 200-300 s, 3.5 GB) where the server's Attribute stops at
    # Limits.attribution_seconds; a bound of a microsecond stops it at its first check
    path = long_path(tmp_path)
    out = cli([path, "--model", "markov", "--order", "3", "--seconds", "1e-6"])
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: markov: the computation passed its budget of 1e-06s "
                                  "(--seconds; the server's Limits.attribution_seconds): raise "
                                  "--seconds, or use fewer paths or channels, or a lower Markov "
                                  "order")
    assert cli([path, "--model", "markov", "--order", "3"]).returncode == 0  # the default: 5 s


def test_the_default_seconds_are_the_servers_limit():
    import argparse

    from server.limits import Limits
    from training.attribute import _add_arguments

    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    assert parser.parse_args(["f", "--model", "first"]).seconds == Limits().attribution_seconds


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_seconds_must_be_positive(ca_file, seconds):
    out = cli([ca_file, "--model", "first", "--seconds", seconds])
    assert out.returncode == 2 and "--seconds: must be > 0 seconds" in out.stderr, out.stderr


def test_plot_leaves_out_a_model_past_its_seconds(tmp_path):
    from training.attribute import read_paths
    from training.attribution_plot import all_credits

    credits, skipped = all_credits(read_paths(long_path(tmp_path)), seconds=1e-9, order=3)
    assert skipped["markov"].startswith("the computation passed its budget of 1e-09s")
    assert "markov" not in credits and "first" in credits   # the heuristics have no checks


def test_the_ordered_form_refuses_more_rank_cells_than_the_servers_limit(tmp_path):
    # the command passed no max_rank_cells: one path over n distinct channels built n x n credits
    # by rank (two doubles a cell: 20,000 channels, a 200 kB file, took 6.4 GB) where the
    # server's Attribute refuses past Limits.attribution_rank_cells (1,000,000)
    path = tmp_path / "wide.csv"
    path.write_text(" > ".join(f"c{i}" for i in range(1001)) + ";1;1;0\n")
    args = [path, "--model", "shapley", "--shapley-form", "ordered", "--json"]
    out = cli(args)
    assert out.returncode == 2, (out.returncode, out.stderr[-300:])
    assert out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        "error: shapley_form: the ordered form's credits by rank would be 1001 channels x 1001 "
        "ranks (the most distinct channels of one path), more than 1000000 cells; use the counts "
        "form or fewer channels per path")
    raised = cli([*args, "--rank-cells", "1002001"])
    assert raised.returncode == 0, raised.stderr
    assert len(json.loads(raised.stdout)["credits"]) == 1001


def test_the_default_rank_cells_are_the_servers_limit():
    import argparse

    from server.limits import Limits
    from training.attribute import _add_arguments

    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    assert parser.parse_args(["f", "--model", "first"]).rank_cells == \
        Limits().attribution_rank_cells


def test_plot_leaves_out_the_ordered_form_past_its_rank_cells(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("a > b > c;1;1;0\n")
    png = tmp_path / "c.png"
    out = cli([path, "--model", "first", "--shapley-form", "ordered", "--rank-cells", "8",
               "--plot", png])
    assert out.returncode == 0 and png.stat().st_size > 0, out.stderr
    assert ("--plot: shapley left out: shapley_form: the ordered form's credits by rank would "
            "be 3 channels x 3 ranks") in out.stderr


@pytest.mark.parametrize("fmt, text", [
    ("channelattribution", "a > b;1;10;1\r\nb;1;4;0\r\n"),
    ("tailor", '{"path": ["a", "b"], "value": 10, "nulls": 1}\n{"path": "b", "value": 4}\n'),
])
def test_a_byte_order_mark_is_not_part_of_the_first_channel(tmp_path, fmt, text):
    # a spreadsheet's UTF-8 export starts with U+FEFF: it was read into the first channel's
    # name, '\ufeffa', a channel apart from the 'a' of every other row (or, in JSON Lines,
    # 'line 1: not JSON')
    path = tmp_path / "paths.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    out = cli([path, "--model", "first", "--json"])
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["credits"]) == ["a", "b"]
