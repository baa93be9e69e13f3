"""The bench's paired servers (`--compare-env`, `--compare-src`, `--impressions`) and the
`loadtests/gcstats` hook against a real `python -m server`."""
import json
import os
from pathlib import Path

import pytest

from loadtests import bench
from loadtests.gcstats.__main__ import summary
from loadtests.loadgen import PING, ping_payloads, run_load

ROOT = Path(__file__).resolve().parents[2]


def variants(*argv: str):
    return bench.server_variants(bench.build_parser().parse_args(list(argv)))


def source_tree(path: Path) -> Path:
    """`path` made to look like a Tailor tree: --server-src and --compare-src take no other."""
    (path / "server").mkdir()
    (path / "server" / "__main__.py").touch()
    return path


def test_compare_env_pairs_defaults_with_the_variables_and_server_env_goes_to_both(tmp_path):
    source_tree(tmp_path)
    assert variants("--compare-env", "TAILOR_X=5", "--server-env", "TAILOR_Y=1",
                    "--server-src", str(tmp_path)) == [
        ("A", {"TAILOR_Y": "1"}, tmp_path), ("B", {"TAILOR_Y": "1", "TAILOR_X": "5"}, tmp_path)]


def test_compare_src_runs_b_from_the_other_tree_and_impressions_keep_their_modes(tmp_path):
    source_tree(tmp_path)
    assert variants("--compare-src", str(tmp_path)) == [("A", {}, None), ("B", {}, tmp_path)]
    assert [(m, env["TAILOR_IMPRESSION_LOG"]) for m, env, _ in variants("--impressions", "both")] \
        == [("off", "false"), ("on", "true")]
    assert variants() == [(None, {}, None)]


def test_compare_src_with_impressions_both_runs_each_tree_with_the_log_off_and_on(tmp_path):
    source_tree(tmp_path)
    found = variants("--compare-src", str(tmp_path), "--impressions", "both")
    assert [(m, env["TAILOR_IMPRESSION_LOG"], src) for m, env, src in found] == [
        ("A off", "false", None), ("A on", "true", None),
        ("B off", "false", tmp_path), ("B on", "true", tmp_path)]


def test_gcstats_writes_a_real_servers_collections_at_its_exit(tmp_path):
    prefix = tmp_path / "gc"
    env = {"TAILOR_GC_STATS": str(prefix),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "loadtests" / "gcstats"), str(ROOT)])}
    with bench.serving(data_dir=tmp_path / "data", env=env) as served:
        run_load(served.target, PING, ping_payloads(), concurrency=4, duration=1.0)
        path = Path(f"{prefix}.{served.process.pid}.json")
        assert not path.exists()  # written at exit
    stats = json.loads(path.read_text())
    assert stats["seconds"] > 0 and isinstance(stats["late_modules"], list)
    assert stats["runs"] and all(gen in (0, 1, 2) and cpu >= 0 for gen, cpu, _, _ in stats["runs"])
    assert summary(str(path)).startswith(f"{path}: ")


def test_gcstats_says_what_it_reads_and_when_nothing_is_there(tmp_path, capsys):
    """`--help` printed nothing (it was taken for a prefix with no files under it)."""
    from loadtests.gcstats.__main__ import main
    with pytest.raises(SystemExit) as ended:
        main(["--help"])
    assert ended.value.code == 0 and "PREFIX.<pid>.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ended:
        main([str(tmp_path / "none")])
    assert ended.value.code == 1 and "no server wrote" in capsys.readouterr().err


def test_secured_names_absolute_paths_for_a_server_started_in_another_tree(tmp_path, monkeypatch):
    """`bench_profiles --tls --compare-src DIR` with its relative default `--work` gave the
    other tree's server `--tls-cert .bench/profiles/tls/server.pem`, which it looked up in DIR
    (its cwd) and exited 2."""
    monkeypatch.chdir(tmp_path)
    flags = bench.secured(Path("tls")).flags
    paths = [Path(v) for k, v in zip(flags[::2], flags[1::2])]
    assert all(p.is_absolute() and p.exists() for p in paths), paths
