"""`loadtests.stream_floor`: the floor servers and a real `python -m server` each take every
event of each round, and the report prints each one's CPU an event beside the raw store's."""
import re

from loadtests import stream_floor


def test_every_server_takes_every_event_and_the_report_names_the_floor(tmp_path, capsys):
    stream_floor.main(["--events", "1000", "--users", "40", "--rounds", "2", "--no-sync",
                       "--work", str(tmp_path)])
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^(transport|convert|tailor) +([\d., ]+?) +[\d.]+ +[\d,]+$", out, re.M))
    assert sorted(rows) == ["convert", "tailor", "transport"]
    assert all(len(r.split(", ")) == 2 for r in rows.values())  # one figure a round
    least = re.search(r"convert \+ one LMDB record an event = ([\d.]+) us", out)
    assert least and float(least.group(1)) > 0
    assert re.search(r"raw LMDB .* ([\d.]+) us of CPU a record", out)
