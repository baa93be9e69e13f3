"""`python -m clients track` whose stream ends without its summary (a deadline, a server gone)
says how far it read and that tracking the file again is safe, as it does for a bad line."""
import json
import re
import time

from tests.conftest import run_module

EVENTS = 100_000


def test_a_track_stream_cut_short_says_what_it_read_and_that_a_resend_is_safe(
        server_process, tmp_path):
    """Measured before: 'error: DEADLINE_EXCEEDED: Deadline Exceeded' and nothing more, with
    7,000 of 200,000 events committed (the same file again: 7,000 duplicates)."""
    server = server_process(env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    now = time.time() - 60
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"event_id": f"t{i}", "user_id": f"u{i % 500}",
                                          "type": "view", "timestamp": now - i}) + "\n"
                              for i in range(EVENTS)))
    cut = run_module("clients", "track", str(events), "--server", server.target,
                     "--timeout", "0.5", check=False)
    line = cut.stderr.strip()
    assert cut.returncode == 1 and not cut.stdout and len(line.splitlines()) == 1, cut.stderr
    assert line.startswith("error: DEADLINE_EXCEEDED: "), line
    read = re.search(rf"after (\d+) events of {re.escape(str(events))} were read", line)
    assert read and "tracking it again is safe" in line, line
    again = json.loads(run_module("clients", "track", str(events), "--server",
                                  server.target).stdout)
    assert again["accepted"] + again["duplicates"] == EVENTS  # nothing lost, nothing twice
    assert 0 < again["duplicates"] <= int(read[1]) < EVENTS  # committed: some of those read
