"""`bench_profiles --encryption both --compare-src`: both trees' servers ingest, encrypted and
plain, in every round, and each tree's ratios are printed (real `python -m server`s)."""
import math
import re
from pathlib import Path

import pytest

from loadtests import bench_profiles

ROOT = Path(__file__).resolve().parents[2]


def test_compare_src_ingests_with_both_trees_in_both_modes(tmp_path, capsys):
    bench_profiles.main(["--encryption", "both", "--compare-src", str(ROOT), "--events", "600",
                         "--users", "50", "--rounds", "1", "--read-seconds", "0.6", "--no-sync",
                         "--work", str(tmp_path)])
    out = capsys.readouterr().out
    runs = re.findall(r"round 0 ([AB]) encryption (on |off): ([\d,]+) events/s", out)
    assert sorted((t, e.strip()) for t, e, _ in runs) == [("A", "off"), ("A", "on"),
                                                           ("B", "off"), ("B", "on")]
    assert all(int(rate.replace(",", "")) > 0 for _, _, rate in runs)
    for tree in "AB":
        assert re.search(rf"  {tree}: throughput [\d,]+ / [\d,]+ events/s = x\d", out)
    assert {p.name for p in tmp_path.iterdir()} >= {"A", "B"}


def _both_modes(tmp_path, capsys, *argv: str) -> str:
    """The output of one `--encryption both` round over 50 users' events, 40 stored profiles,
    fsync off, its data under `tmp_path`."""
    bench_profiles.main(["--encryption", "both", "--users", "50", "--profiles", "40",
                         "--rounds", "1", "--no-sync", "--work", str(tmp_path), *argv])
    return capsys.readouterr().out


def test_encryption_both_reads_in_alternated_slices_and_ingests_in_alternated_chunks(tmp_path,
                                                                                   capsys):
    """Both servers are read in alternated slices, and (`--ingest-chunks`) the events are sent
    in chunks alternating between both modes' servers: one run checks both (each its own run
    before: both start and fill the same four servers' stores)."""
    out = _both_modes(tmp_path, capsys, "--events", "900", "--read-seconds", "0.9",
                      "--read-slices", "3", "--ingest-into", "stored", "--ingest-chunks", "3")
    rounds = re.findall(r"round (\d) encryption (on |off): [\d,]+ events/s, [\d.]+ us CPU/event; "
                        r"GetProfile p50 ([\d.]+) ms p99 ([\d.]+) ms", out)
    assert sorted((r, e.strip()) for r, e, _, _ in rounds) == [("0", "off"), ("0", "on")]
    assert all(0 < float(p50) <= float(p99) for _, _, p50, p99 in rounds)
    assert re.search(r"GetProfile p99 +[\d.]+ / +[\d.]+ ms = x\d", out)
    assert "50 users into a stored store" in out
    # the ingestions started from copies of stores already holding the 40 profiles
    assert {p.name for p in tmp_path.iterdir()} >= {"read-40-on", "read-40-off",
                                                     "ingest-base-40-on", "ingest-base-40-off"}
    rounds = re.findall(r"round 0 encryption (on |off): ([\d,]+) events/s", out)
    assert sorted(e.strip() for e, _ in rounds) == ["off", "on"]
    pooled = re.search(r"pooled over the rounds: throughput x([\d.]+) \([+-][\d.]+% slower\), "
                       r"CPU per event x([\d.]+)", out)
    median = re.search(r"ingestion throughput .* = x([\d.]+) .*\n  server CPU per event .* = x([\d.]+)",
                       out)
    assert pooled and median and pooled.groups() == median.groups()  # one round: the same ratios
    # three chunks, each sent to both servers: three on/off pairs
    assert re.search(r"  3 interleaved chunk pairs: slower by median [+-][\d.]+% \(quartiles ", out)


@pytest.mark.parametrize("argv", [
    ["--encryption", "on", "--ingest-chunks", "3"],  # one mode: nothing to alternate with
    ["--encryption", "both", "--compare-src", str(ROOT), "--ingest-chunks", "3"],
    ["--encryption", "both", "--ingest-chunks", "0"],
    ["--encryption", "both", "--events", "2", "--ingest-chunks", "3"],  # an empty chunk
])
def test_ingest_chunks_are_refused_where_they_cannot_apply(tmp_path, argv, capsys):
    with pytest.raises(SystemExit):
        bench_profiles.main([*argv, "--work", str(tmp_path)])
    assert "--ingest-chunks" in capsys.readouterr().err


def test_a_chunk_under_one_clock_tick_has_no_cpu_ratio():
    """A small chunk may burn less CPU than one clock tick (read as 0 s): its CPU ratio is
    NaN, left out of the quartiles, not a division by zero."""
    got = {True: {"chunks": [(2.0, 0.02), (1.0, 0.01)]},
           False: {"chunks": [(1.0, 0.0), (1.0, 0.01)]}}
    (slower, cpu), second = bench_profiles._chunk_ratios(got)
    assert slower == 0.5 and math.isnan(cpu) and second == (0.0, 1.0)


def test_tls_streams_and_reads_with_a_checked_token(tmp_path, capsys):
    """`--tls`: the servers take TLS and check the token on every call (TrackEventStream,
    GetProfile, Ping); the run completes, so every call was allowed with the token's roles."""
    bench_profiles.main(["--tls", "--events", "600", "--users", "50", "--profiles", "40",
                         "--read-seconds", "0.6", "--no-sync", "--parts", "attributes,consent",
                         "--work", str(tmp_path)])
    out = capsys.readouterr().out
    assert "TLS + checked token on every call" in out
    assert re.search(r"GetProfile / Ping: QPS x[\d.]+, server CPU per call", out)
