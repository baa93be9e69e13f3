"""`python -m clients` prints one `error:` line instead of a traceback: exit 1 with `CODE: message`
for a gRPC status, exit 2 naming the file and line for what the user gave; `track` stops at a
bad line and says how many events before it were committed."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest

from tests.conftest import ROOT, free_port, run_module


def cli(*args: str, expect: int) -> str:
    proc = run_module("clients", *args, check=False, timeout=120)
    assert proc.returncode == expect, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and not proc.stdout
    return proc.stderr.strip()


def refused_here(*args: str) -> str:
    """`cli(*args, expect=2)` run in this process (`clients.__main__.main`): for what the CLI
    refuses before any call (a file, a line, a flag), where the command's line and exit code
    are checked, not its process (a `python -m clients` start is ~0.5 s of CPU; the commands
    that reach gRPC, whose C-core writes to the process's stderr, stay processes). An exception
    other than argparse's exit propagates: a traceback fails the test as before."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from clients.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    stderr = err.getvalue()
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("error: ") and not out.getvalue()
    return stderr.strip()


@pytest.fixture(scope="module")
def served(module_server_process, tmp_path_factory):
    """One server for the module's tests: each writes under ids of its own (events, users,
    campaigns) or only reads or is refused, so none sees what another changed."""
    tmp = tmp_path_factory.mktemp("cli-served")
    return module_server_process(tmp / "data",
                                 env={"TAILOR_SECRETS_DIR": str(tmp / "secrets")}).target


@pytest.fixture
def own_served(server_process, tmp_path):
    """A server of the test's own, for a test that counts every decision it holds."""
    return server_process(env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}).target


def created(served: str, spec: dict) -> None:
    """The campaign `spec` created on `served` in process: a test's setup (a `python -m clients`
    start less; `test_send_rate_applies_to_the_campaigns_channel` creates its own with the CLI)."""
    from clients import TailorClient
    with TailorClient(served, timeout=60) as client:
        client.create_campaign(spec)


def test_track_names_the_bad_line_and_what_was_committed_before_it(served, tmp_path):
    now = time.time() - 60
    good = [json.dumps({"event_id": f"t{i}", "user_id": f"u{i % 7}", "type": "view", "timestamp": now})
            for i in range(2999)]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(good + ['{"event_id": "t-last", "user_id": "u1", "type": "view",']) + "\n")
    line = cli("track", str(events), "--server", served, "--batch-size", "500", expect=2)
    assert line.startswith(f"error: {events} line 3000: ") and "Expecting" in line
    assert line.endswith("the 2999 events before it were committed (0 duplicates, 0 rejected)")
    again = tmp_path / "again.jsonl"
    again.write_text("\n".join(good[:10] + ['{"event_id": "x", "timestamp": "not a time"}']) + "\n")
    assert "line 11: " in cli("track", str(again), "--server", served, expect=2)
    assert "the 0 events before it were committed (10 duplicates" in cli("track", str(again), "--server",
                                                                        served, expect=2)
    again.write_bytes(("\n".join(good[:3]) + "\n").encode() + b"\xff\xfe\n")  # not text
    line = cli("track", str(again), "--server", served, expect=2)
    assert line.startswith(f"error: {again} line 4: ") and "can't decode byte 0xff" in line


def test_missing_and_malformed_files_are_named(served, tmp_path):
    missing = tmp_path / "missing.jsonl"
    assert cli("track", str(missing), "--server", served, expect=2) == \
        f"error: {missing}: no such file or directory"
    spec = tmp_path / "campaign.json"
    spec.write_text('{"campaign_id": "c1",\n "variants": [}\n')
    line = cli("campaign", "create", "--file", str(spec), "--server", served, expect=2)
    assert line.startswith(f"error: {spec}: ") and "line 2 column" in line
    spec.write_text('{"campaign_id": "c1", "variants": [{"id": "a", "content": "A"}]}')
    line = cli("campaign", "create", "--file", str(spec), "--server", served, expect=2)
    assert line.startswith(f"error: {spec}: ") and "variants[0].content" in line


def test_an_unknown_spec_field_is_one_line_naming_the_fields_as_the_proto_does(tmp_path):
    """protobuf's ParseError took two lines (refused_here() requires one) and listed the fields in
    camelCase ('frequencyCaps') while the proto and docs write frequency_caps: a new
    integrator's `frequency_cap` typo did not point at the spelling to use."""
    spec = tmp_path / "campaign.json"
    spec.write_text('{"campaign_id": "c1", "frequency_cap": []}')
    line = refused_here("campaign", "create", "--file", str(spec), "--server", "127.0.0.1:9")
    assert line.startswith(f"error: {spec}: ") and "'frequency_cap'" in line
    assert "frequency_caps, quiet_hours" in line and "frequencyCaps" not in line
    spec.write_text('{"campaign_id": "c1", "variants": [{"id": "a", "contents": {}}]}')
    line = refused_here("campaign", "update", "--file", str(spec), "--server", "127.0.0.1:9")
    assert "'contents'" in line and "variants[0]" in line and "(fields: id, content, " in line


@pytest.mark.parametrize("content, said", [
    (b'{"item_id": "a", "price": 1}\n5\n', "line 2: expected a JSON object, got int"),
    (b'{"item_id": "caf\xe9"}\n', "line 1: not UTF-8 text"),
    (b'{"item_id": "a", "title": "' + b"x" * (1 << 20) + b'"}\n', "line 1: longer than 1048576"),
    (b"\n\n", "no items (one JSON object a line)")])
def test_a_catalog_file_that_holds_no_items_is_one_line_before_any_call(tmp_path, content, said):
    """`catalog upsert` ended a line that is JSON but no object, or not UTF-8, in a traceback
    (TypeError, UnicodeDecodeError), and read a line of any length whole; an over-long line
    or no item at all went to the server (here: none, UNAVAILABLE, exit 1)."""
    items = tmp_path / "items.jsonl"
    items.write_bytes(content)
    line = refused_here("catalog", "upsert", str(items), "--server", f"127.0.0.1:{free_port()}")
    assert line.startswith(f"error: {items}") and said in line, line


def test_a_bad_attribution_path_line_names_its_file(tmp_path):
    """README: a bad file or line is `error: FILE line N: ...` (exit 2). `attribute` named the
    command instead of the file ("attribute: line 2: ..."), so a user running it over several
    files could not tell which one held the line."""
    paths = tmp_path / "paths.jsonl"
    paths.write_text('{"path": ["email", "web"], "conversions": 1}\n{"bad": 1}\n')
    line = refused_here("attribute", "--model", "linear", str(paths), "--server",
                        f"127.0.0.1:{free_port()}")
    assert line.startswith(f"error: {paths} line 2: unknown key 'bad'"), line


def test_grpc_statuses_are_one_line(served):
    line = cli("profile", "--user", "nobody-here", "--server", served, expect=1)
    assert line.startswith("error: NOT_FOUND: ") and "nobody-here" in line
    line = cli("ping", "--server", f"127.0.0.1:{free_port()}", "--timeout", "1", expect=1)
    assert line.startswith("error: UNAVAILABLE: ") or line.startswith("error: DEADLINE_EXCEEDED: ")


def test_health_of_an_unknown_service_names_it(served):
    """gRPC's health service answers an unknown name with NOT_FOUND and no message: the CLI
    printed `error: NOT_FOUND: ` and nothing after it."""
    line = cli("health", "--service", "tailor.v1.NoSuchService", "--server", served, expect=1)
    assert line == "error: NOT_FOUND: no health status for service 'tailor.v1.NoSuchService' " \
                   "(services: '' for the whole server, or a tailor.v1 service name)"


def test_connection_flags_that_do_not_go_together_are_one_line(tmp_path):
    cert = tmp_path / "client.pem"
    cert.write_text("not read: refused before any connection")
    line = refused_here("ping", "--server", f"127.0.0.1:{free_port()}", "--cert", str(cert))
    assert line == "error: a client certificate needs its key: give both --cert and --key"


def test_long_options_are_not_abbreviated():
    """`recommend --k 3` was taken as `--key 3` (argparse's abbreviations: the TLS client key)
    and failed on the certificate flags; it is now an unrecognized option, as `-k` is meant."""
    proc = run_module("clients", "recommend", "--user", "0", "--k", "3", "--server",
                      f"127.0.0.1:{free_port()}", check=False, timeout=120)
    assert proc.returncode == 2 and "unrecognized arguments: --k 3" in proc.stderr, proc.stderr


def test_a_server_address_grpc_would_misread_is_a_usage_error():
    """gRPC takes a port past 65535 modulo 65536 (127.0.0.1:99999 dialled 34463: whatever
    listens there answered) and an empty address printed C-core log lines above UNKNOWN."""
    assert cli("ping", "--server", "127.0.0.1:99999", expect=2) == \
        "error: --server 127.0.0.1:99999: port 99999 is not in 1..65535"
    assert cli("ping", "--server", "", expect=2) == "error: --server: an empty address (give host:port)"
    # a URL was looked up as a host name: 'errors resolving http://...', exit 1 as a server status
    for url in ("http://127.0.0.1:50051", "grpc://127.0.0.1:50051", "https://tailor.example:443"):
        scheme = url.split(":")[0]
        assert cli("ping", "--server", url, expect=2) == \
            f"error: --server {url}: give host:port, without {scheme}://"


def test_a_server_that_never_answers_is_named_with_the_deadline():
    """A host that takes the connection and never speaks gRPC: the deadline holds, and the line
    said only 'Deadline Exceeded', neither which server nor which deadline."""
    import socket
    with socket.create_server(("127.0.0.1", 0)) as silent:
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        line = cli("ping", "--server", target, "--timeout", "1", expect=1)
    assert line == (f"error: DEADLINE_EXCEEDED: Deadline Exceeded (no answer from {target} "
                    "within --timeout 1 s)")


def test_a_dead_letter_retry_whose_answer_never_came_says_a_repeat_is_safe():
    """RetryDeadLetter is not retried by the channel; one that ended without its answer said
    only the status, the letter perhaps sent: the line says so and that a repeat cannot send
    it twice (the letter is claimed, then dropped)."""
    import socket
    with socket.create_server(("127.0.0.1", 0)) as silent:
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        line = cli("message", "retry", "--id", "dl-1", "--server", target, "--timeout", "1",
                   expect=1)
    assert line == (f"error: DEADLINE_EXCEEDED: Deadline Exceeded (no answer from {target} "
                    "within --timeout 1 s); the letter may have been sent: run the command "
                    "again (a letter that went is not sent twice: its repeat answers NOT_FOUND "
                    "once it is dropped, FAILED_PRECONDITION while this retry still holds it)")


def test_a_preview_attribute_without_its_value_is_a_usage_error():
    """`message preview --attribute first_name` (no `=`) went to the server as first_name="",
    rendered as an empty name with nothing said; now refused before any call."""
    line = refused_here("message", "preview", "--campaign", "c", "--attribute", "first_name",
                        "--server", f"127.0.0.1:{free_port()}")
    assert line == "error: --attribute: expected KEY=VALUE, got 'first_name'"


def test_a_reader_that_leaves_early_ends_the_command_without_a_traceback(served):
    """`python -m clients model stats | head -1`: the reader closes the pipe, the CLI stops
    quietly (exit 1, nothing on stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "clients", "model", "stats", "--server", served],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the CLI writes: every write to stdout fails with EPIPE
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err == b"", err.decode()[-2000:]


def test_bad_files_context_and_tls_flags_are_one_line_before_any_call(tmp_path):
    """Refused before the (unreachable) server is called: exit 2 naming the file or flag."""
    binary = tmp_path / "users.bin"
    binary.write_bytes(b"u1\n\xff\xfe\n")
    missing, server = tmp_path / "missing", ["--server", f"127.0.0.1:{free_port()}"]
    cases = {
        ("campaign", "send", "--campaign", "c", "--users", str(missing)):
            f"{missing}: no such file or directory",
        ("campaign", "send", "--campaign", "c", "--users", str(tmp_path)):
            f"{tmp_path}: is a directory",
        ("campaign", "send", "--campaign", "c", "--users", str(binary)):
            f"{binary} line 2: not UTF-8 text",
        ("campaign", "plan", "--campaign", "c", "--users", str(binary)):
            f"{binary} line 2: not UTF-8 text",
        ("campaign", "plan", "--campaign", "c", "--users", str(missing)):
            f"{missing}: no such file or directory",
        ("campaign", "export", "--out", str(missing / "x.jsonl")):
            f"{missing / 'x.jsonl'}: no such file or directory",
        ("message", "compose", "--campaign", "c", "--user", "u", "--context", "foo"):
            "--context: expected KEY=NUMBER, got 'foo'",
        ("campaign", "choose", "--campaign", "c", "--user", "u", "--context", "a=x"):
            "--context: expected KEY=NUMBER, got 'a=x'",
        ("ping", "--tls-ca", str(missing)): f"--tls-ca {missing}: no such file or directory",
        ("ping", "--cert", str(missing), "--key", str(tmp_path)): f"--key {tmp_path}: is a directory",
        ("ping", "--timeout", "0"): "--timeout: 0 is not a number above 0",
        ("track", str(missing), "--batch-size", "-5"): "--batch-size: -5 is not a number above 0",
        ("campaign", "plan", "--campaign", "c", "--users", str(missing), "--batch-size", "0"):
            "--batch-size: 0 is not a number above 0",
        ("campaign", "export", "--out", str(tmp_path / "d.jsonl"), "--start", "soon"):
            "--start: 'soon' is neither epoch seconds nor an ISO date/time",
    }
    for args, said in cases.items():
        assert refused_here(*args, *server) == f"error: {said}"
    users, out = tmp_path / "users.txt", tmp_path / "plan.jsonl"
    users.write_text("u1\n")
    out.write_text("kept\n")  # a bad --context must not truncate an existing --out
    assert refused_here("campaign", "plan", "--campaign", "c", "--users", str(users), "--out",
                        str(out), "--context", "foo", *server) == \
        "error: --context: expected KEY=NUMBER, got 'foo'"
    assert out.read_text() == "kept\n"


@pytest.mark.parametrize("args, said", [
    (("audit", "tail", "-n", "0"), "-n: 0 is not a number above 0"),
    (("attribute", "--stored", "--model", "markov", "--order", "0"),
     "--order: 0 is not a number above 0"),
    (("campaign", "sample-size", "--baseline-rate", "0.1", "--mde", "0.02", "--arms", "0"),
     "--arms: 0 is not a number above 0"),
    (("model", "stats", "--confidence", "0"), "--confidence: 0 is not a number above 0"),
    (("model", "stats", "--confidence", "-0.5"), "--confidence: -0.5 is not a number above 0"),
])
def test_a_zero_the_request_reads_as_the_servers_default_is_refused(args, said):
    """0 in these request fields means "the server's default": `audit tail -n 0` printed 100
    lines, `--order 0` a first-order Markov model, `--arms 0` two arms, `--confidence 0` 95%
    intervals, each exit 0 as if asked for. Left out, the default still goes (0 on the wire)."""
    assert refused_here(*args, "--server", f"127.0.0.1:{free_port()}") == f"error: {said}"


def test_a_flag_left_out_still_gets_the_servers_default(served):
    out = json.loads(run_module("clients", "campaign", "sample-size", "--baseline-rate", "0.1",
                                "--mde", "0.02", "--server", served).stdout)
    assert len(out["per_arm"]) == 2


def test_a_timeout_too_far_away_for_grpc_is_a_usage_error(served):
    # gRPC takes a deadline 1e10 s away as one already past: `status --timeout 1e10` (a
    # script's "no limit") answered DEADLINE_EXCEEDED at once, the server up
    assert cli("status", "--server", served, "--timeout", "1e10", expect=2) == \
        "error: --timeout: 1e+10 is above 2592000 (30 days)"
    proc = run_module("clients", "status", "--server", served, "--timeout", "2592000")
    assert "active" in json.loads(proc.stdout)


def test_send_rate_applies_to_the_campaigns_channel(served, tmp_path):
    """`--rate` goes to the SMS campaign's channel: the server's range check names it."""
    spec = tmp_path / "sms.json"
    spec.write_text(json.dumps({"campaign_id": "s", "channel": "sms", "policy": "fixed", "variants": [
        {"id": "a", "content": {"text": "Hi {{ first_name | default('there') }} {{ unsubscribe_url }}"}}]}))
    run_module("clients", "campaign", "create", "--file", str(spec), "--server", served)
    users = tmp_path / "users.txt"
    users.write_text("u1\n")
    line = cli("campaign", "send", "--campaign", "s", "--users", str(users), "--rate", "1e9",
               "--server", served, expect=1)
    assert line.startswith("error: INVALID_ARGUMENT: rate_per_second[sms]: "), line


def test_a_token_no_header_can_hold_is_one_line(tmp_path):
    line = refused_here("ping", "--server", f"127.0.0.1:{free_port()}", "--token", "two words")
    assert line.startswith("error: --token: ")


@pytest.mark.parametrize("flag", ["--tls-ca", "--cert"])
def test_a_tls_file_that_is_not_pem_is_named(tmp_path, flag):
    """gRPC took any bytes and failed each call with UNAVAILABLE ("failed to create security
    handshaker"), retried, after four C-core log lines."""
    junk = tmp_path / "ca.crt"
    junk.write_bytes(b"\x30\x82\x01\x0a not PEM (DER, or the wrong file)")
    key = tmp_path / "client.key"  # read before --cert
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot checked further\n-----END PRIVATE KEY-----\n")
    extra = ["--key", str(key)] if flag == "--cert" else []
    line = refused_here("ping", "--server", f"127.0.0.1:{free_port()}", flag, str(junk), *extra)
    assert line == f"error: {flag} {junk}: not a PEM file (no -----BEGIN line)"


@pytest.mark.parametrize("flags, said", [
    (lambda c: ["--tls-ca", c.key], lambda c: f"--tls-ca {c.key}: no PEM certificate in it "
                                             "(-----BEGIN CERTIFICATE-----)"),
    (lambda c: ["--cert", c.key, "--key", c.cert], lambda c: f"--key {c.cert}: no PEM private "
                                                            "key in it (-----BEGIN PRIVATE KEY-----)"),
], ids=["key-as-ca", "cert-and-key-swapped"])
def test_a_tls_file_of_the_wrong_kind_is_named(tmp_path, flags, said):
    """A key given as --tls-ca, or --cert and --key swapped (PEM files all): gRPC failed every
    call UNAVAILABLE ("failed to create security handshaker") after four C-core log lines."""
    from loadtests.certs import CertificateAuthority
    issued = CertificateAuthority(tmp_path / "ca").issue("client", client=True)
    line = refused_here("ping", "--server", f"127.0.0.1:{free_port()}", *map(str, flags(issued)))
    assert line == f"error: {said(issued)}"


class _Unanswering(grpc.GenericRpcHandler):
    """A real gRPC server's handler of the three streaming calls that answers nothing until
    the call ends (its deadline) or 10 s have passed."""

    KINDS = {"TrackEventStream": grpc.stream_stream_rpc_method_handler,
             "PlanCampaign": grpc.stream_stream_rpc_method_handler,
             "ExportDecisions": grpc.unary_stream_rpc_method_handler}
    UNARY = ("Rollback", "PromoteCanary", "AbortCanary", "Ping")

    def service(self, details):
        name = details.method.rsplit("/", 1)[-1]
        if name in self.UNARY:
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: b"".join(self._wait(request, context)))
        kind = self.KINDS.get(name)
        return None if kind is None else kind(self._wait)

    @staticmethod
    def _wait(request, context):
        end = time.monotonic() + 10
        while context.is_active() and time.monotonic() < end:
            time.sleep(0.01)
        yield from ()


def test_streaming_commands_keep_the_timeout_they_are_given(tmp_path):
    """`track`, `campaign plan` and `campaign export` ran under the client's own deadlines (300 s,
    1 h) whatever --timeout said: a backfill too big for 300 s could not be given more time.
    Against a server that does not answer, each gives up at its --timeout (a deadline no call
    could miss: a 1 us one is rounded to gRPC's millisecond timers, within which a Tailor
    server could answer an empty export)."""
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps({"event_id": f"d{i}", "user_id": f"u{i % 7}", "type": "view",
                                            "timestamp": time.time() - 60}) for i in range(2000)) + "\n")
    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\n")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[_Unanswering()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for args in (("track", str(events)),
                     ("campaign", "plan", "--campaign", "c", "--users", str(users), "--quiet"),
                     ("campaign", "export", "--out", str(tmp_path / "d.jsonl"))):
            began = time.monotonic()
            line = cli(*args, "--server", f"127.0.0.1:{port}", "--timeout", "0.5", expect=1)
            assert line.startswith("error: DEADLINE_EXCEEDED"), (args, line)
            assert time.monotonic() - began < 8, args  # the flag's 0.5 s, not the server's 10 s
    finally:
        server.stop(None)


def test_each_command_keeps_its_own_default_timeout_and_the_one_given():
    """The streaming commands' `set_defaults(timeout=...)` went to the --timeout action every
    subparser shares: every command's default was attribute's 600 s (`ping` at a server that
    does not answer waited 10 minutes, not the 5 s --help says; `campaign plan` was cut at 10
    minutes, not 1 h). `rollback` and `model promote` ignored --timeout (a fixed 120 s), and
    `model abort` had 5 s though the server waits up to 60 s for its workers."""
    from clients.__main__ import TIMEOUTS, _default_timeout, build_parser

    def default(*argv: str) -> float:
        args = build_parser().parse_args(argv)
        _default_timeout(args)
        return args.timeout
    assert default("ping") == default("recommend", "--user", "u") == 5.0
    assert default("track") == 300.0 and default("attribute", "--model", "linear") == 600.0
    assert default("campaign", "plan", "--campaign", "c", "--users", "u") == 3600.0
    assert default("campaign", "export", "--out", "o") == 3600.0
    assert default("rollback") == default("model", "promote") == default("model", "abort") == 120.0
    assert default("export-profile", "--user", "u") == 60.0 and len(TIMEOUTS) == 8
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[_Unanswering()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        for args in (("ping",), ("rollback", "--timeout", "0.5"),
                     ("model", "promote", "--timeout", "0.5"), ("model", "abort", "--timeout", "0.5")):
            began = time.monotonic()
            line = cli(*args, "--server", f"127.0.0.1:{port}", expect=1)
            assert line.startswith("error: DEADLINE_EXCEEDED"), (args, line)
            assert time.monotonic() - began < 8, args  # 5 s or the flag's 0.5 s, not the server's 10 s
    finally:
        server.stop(None)


def test_campaign_export_takes_a_window_and_pending_decisions_as_strict_json(served, tmp_path):
    """The client could export pending decisions and a time window; the CLI could not, and a
    pending decision's reward (NaN) was written as `NaN`, which strict JSON parsers refuse."""
    from clients import TailorClient
    with TailorClient(served, timeout=60) as client:
        client.create_campaign({"campaign_id": "ex", "channel": "web", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"text": "A"}},
                                             {"id": "b", "content": {"text": "B"}}]})
        client.choose_variant("ex", "u1")
    out = tmp_path / "d.jsonl"

    def export(*flags: str) -> list[dict]:
        run_module("clients", "campaign", "export", "--campaign", "ex", "--out", str(out), *flags,
                   "--server", served)
        return [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the export"))
                for line in out.read_text().splitlines()]

    assert export() == []  # its reward window is open
    pending = export("--include-pending")
    assert len(pending) == 1 and pending[0]["reward"] is None and pending[0]["status"] == "pending"
    assert export("--include-pending", "--start", "2099-01-01") == []
    assert len(export("--include-pending", "--end", "2099-01-01T00:00:00Z")) == 1


def test_a_plan_refused_part_way_says_how_many_users_were_planned(served, tmp_path):
    """The decisions answered before a refusal (here an id past 128 bytes in the third message;
    likewise a deadline, a server restart) are logged and written out: the error said only the
    status, and planning the file again logs a second decision for each of those users."""
    created(served, {"campaign_id": "p-refused", "channel": "push", "policy": "fixed",
                     "variants": [{"id": "a", "content": {"title": "A"}}]})
    users, out = tmp_path / "users.txt", tmp_path / "plan.jsonl"
    users.write_text("\n".join(["u1", "u2", "u3", "u4", "x" * 200, "u6"]) + "\n")
    line = cli("campaign", "plan", "--campaign", "p-refused", "--users", str(users), "--out", str(out),
               "--batch-size", "2", "--quiet", "--server", served, expect=1)
    planned = len(out.read_text().splitlines())
    assert line.startswith("error: INVALID_ARGUMENT: ") and planned == 4, line
    assert line.endswith(f"; the 4 users before it were planned (decisions logged, written to "
                         f"{out}): planning them again logs second decisions"), line


def test_ctrl_c_during_a_plan_is_one_line_saying_what_was_planned(served, tmp_path):
    """Ctrl-C printed a KeyboardInterrupt traceback through gRPC's internals, with the
    decisions already logged nowhere counted."""
    created(served, {"campaign_id": "p-interrupted", "channel": "push", "policy": "fixed",
                     "variants": [{"id": "a", "content": {"title": "A"}}]})
    users, out = tmp_path / "users.txt", tmp_path / "plan.jsonl"
    users.write_text("".join(f"u{i}\n" for i in range(300_000)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients", "campaign", "plan", "--campaign", "p-interrupted", "--users",
         str(users), "--out", str(out), "--quiet", "--server", served], cwd=ROOT,
        stderr=subprocess.PIPE, text=True,  # SIGINT as from a terminal: one inherited ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # (xdist) stays so
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)  # decisions are being written
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    planned = len(out.read_text().splitlines())
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    said = re.fullmatch(r"error: interrupted; at least the (\d+) users before it were planned "
                        rf"\(decisions logged, written to {re.escape(str(out))}; the rest of the "
                        r"batch answered last was logged too\): planning them again logs second "
                        r"decisions", err.strip())
    assert said is not None, err
    # the interrupt may fall between writing a decision and counting it
    assert 0 < planned < 300_000 and planned - int(said[1]) in (0, 1), (planned, err)


LEFT_HELD = """
import os, signal, sys, threading, time
from clients.client import TailorClient
client, calls = TailorClient(sys.argv[1]), []
real = client._campaigns.PlanCampaign
client._campaigns.PlanCampaign = lambda *a, **kw: calls.append(real(*a, **kw)) or calls[-1]
def interrupt():
    while not calls:
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=interrupt, daemon=True).start()
try:
    with client:
        try:
            for _ in client.plan_campaign(sys.argv[2], (f"u{i}" for i in range(300_000))):
                pass
        except KeyboardInterrupt:
            calls[0]._state.condition.acquire()  # as a Ctrl-C inside gRPC's wait left it
            raise
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_that_left_a_calls_lock_held_still_ends_the_client(served, tmp_path):
    """A `campaign plan` hit by Ctrl-C hung for good (seen once in CI; py-spy: the main thread
    in Channel.close waiting for the call, gRPC's event thread waiting for the call's lock,
    which the interrupt, landing inside gRPC's own `with condition:`, had left held). That
    state, made on purpose here: leaving the client's `with` on a KeyboardInterrupt does not
    close the channel (which waits for that call); the process's exit does."""
    created(served, {"campaign_id": "p-held", "channel": "push", "policy": "fixed",
                     "variants": [{"id": "a", "content": {"title": "A"}}]})
    proc = subprocess.run([sys.executable, "-c", LEFT_HELD, served, "p-held"], cwd=ROOT, text=True,
                          capture_output=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 0 and proc.stdout.strip() == "interrupted", proc.stderr[-2000:]


def test_a_plan_runs_where_the_progress_bar_is_not_installed(served, tmp_path):
    """tqdm comes with the `client` extra only (not the server image's install): `campaign plan`
    died on ModuleNotFoundError, --quiet or not. It plans without the bar and says why once."""
    created(served, {"campaign_id": "p-no-tqdm", "channel": "push", "policy": "fixed",
                     "variants": [{"id": "a", "content": {"title": "A"}}]})
    missing = tmp_path / "no" / "tqdm"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'tqdm'\")\n")
    users, out = tmp_path / "users.txt", tmp_path / "plan.jsonl"
    users.write_text("u1\nu2\nu3\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "no"), str(ROOT)])}
    for quiet in ((), ("--quiet",)):
        proc = run_module("clients", "campaign", "plan", "--campaign", "p-no-tqdm", "--users", str(users),
                          "--out", str(out), "--server", served, *quiet, check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout)["decisions"] == 3 and len(out.read_text().splitlines()) == 3
        note = "no progress bar: tqdm is not installed (pip install 'tailor[client]')"
        assert (note in proc.stderr) == (not quiet), proc.stderr


class _ExportCutShort(grpc.GenericRpcHandler):
    """ExportDecisions that sends three records, then fails (a server stopped mid-export)."""

    def service(self, details):
        if not details.method.endswith("/ExportDecisions"):
            return None
        from protos.tailor.v1 import campaign_pb2 as pb

        def export(request, context):
            for i in range(3):
                yield pb.DecisionRecord(decision_id=f"d{i}", campaign_id="c", timestamp=100.0 + i)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        return grpc.unary_stream_rpc_method_handler(
            export, response_serializer=pb.DecisionRecord.SerializeToString)


def test_an_export_cut_short_says_the_file_is_incomplete(tmp_path):
    """The records before the failure are in --out and the error said only the status: a
    script that ignores the exit code feeds a partial log to `training ope`."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[_ExportCutShort()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    out = tmp_path / "d.jsonl"
    try:
        line = cli("campaign", "export", "--out", str(out), "--server", f"127.0.0.1:{port}", expect=1)
    finally:
        server.stop(None)
    assert len(out.read_text().splitlines()) == 3
    assert line == (f"error: UNAVAILABLE: the server is shutting down; {out} is incomplete: the 3 "
                    f"decisions before it were written"), line


def test_a_timestamp_without_an_offset_is_utc_whatever_the_local_zone(served, tmp_path):
    """`track` read "2026-12-01T10:00:00" in the local time zone of the machine running it
    (TZ=Asia/Kolkata: 5 h 30 earlier), while --start/--end and the rest of Tailor say UTC."""
    from datetime import UTC, datetime, timedelta
    when = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event_id": "tz1", "user_id": "tz", "type": "view",
                                  "item_id": "i", "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S")}))
    env = {**os.environ, "TZ": "Asia/Kolkata"}
    run_module("clients", "track", str(events), "--server", served, env=env)
    profile = json.loads(run_module("clients", "profile", "--user", "tz", "--max-events", "5",
                                    "--server", served).stdout)
    assert [e["timestamp"] for e in profile["events"]] == [when.timestamp()]


def test_a_refused_tls_handshake_is_one_line(served, tmp_path):
    """A --tls-ca against a plaintext server: gRPC's C-core printed an INFO line (`I1205 ...
    ssl_transport_security.cc:2563] Handshake failed ...`) above the CLI's error line."""
    from loadtests.certs import CertificateAuthority
    ca = CertificateAuthority(tmp_path / "ca")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    proc = run_module("clients", "ping", "--server", served, "--tls-ca", str(ca.cert),
                      "--timeout", "2", check=False, env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("error: UNAVAILABLE: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_a_connection_that_fails_says_what_to_check(served, tmp_path):
    """gRPC's last error alone ('Connection refused', 'WRONG_VERSION_NUMBER') did not say that
    nothing listened at --server (`make serve PORT=...` against the default 127.0.0.1:50051),
    or that --tls-ca was given to a plaintext server."""
    from loadtests.certs import CertificateAuthority
    nobody = f"127.0.0.1:{free_port()}"
    line = cli("ping", "--server", nobody, "--timeout", "2", expect=1)
    assert line.endswith(f"Connection refused (nothing listens at {nobody}: is the server "
                         "running, on that port (--server)?)"), line
    ca = CertificateAuthority(tmp_path / "ca")
    line = cli("ping", "--server", served, "--tls-ca", str(ca.cert), "--timeout", "2", expect=1)
    assert line.endswith("(the server does not seem to serve TLS: leave out --tls-ca, --cert "
                         "and --key)"), line


def test_a_plan_reads_its_users_from_a_pipe_named_as_a_file(served, tmp_path):
    """`--users /dev/stdin` (or `<(cmd)`) planned nobody and exited 0: the pass that counts the
    users for the progress bar emptied the pipe first."""
    created(served, {"campaign_id": "pipe", "channel": "push", "policy": "fixed",
                     "variants": [{"id": "a", "content": {"title": "A"}}]})
    out = tmp_path / "plan.jsonl"
    run_module("clients", "campaign", "plan", "--campaign", "pipe", "--users", "/dev/stdin",
               "--out", str(out), "--quiet", "--server", served, input="u1\nu2\nu3\n")
    assert [json.loads(line)["user_id"] for line in out.read_text().splitlines()] == ["u1", "u2", "u3"]


def _loading_grpc(pid: int) -> bool:
    """Whether `python -m clients` in `pid` has begun to load gRPC (its C extension mapped).
    The package installs its Ctrl-C handling (`clients._quiet`) first, before grpc is
    imported: a signal before then is Python's own start-up's (a KeyboardInterrupt traceback
    from `site` or runpy, as any program's would be; under load that start-up alone outlasted
    0.15 s, and the interpreter's SIGINT handler, which it installs before `site`, did not
    say it was over)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return any("cygrpc" in line for line in maps)
    except OSError:  # exited
        return True


def _interrupted(args, after, delay: float = 0.0) -> tuple[subprocess.Popen, str]:
    """`python -m clients ARGS` sent SIGINT (as from a terminal) once `after()` is true, then
    `delay` seconds; (process, its stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "clients", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (_loading_grpc(proc.pid) and after()) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    return proc, proc.communicate(timeout=60)[1]


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.45, "waiting"])
def test_ctrl_c_while_the_cli_loads_or_waits_is_one_line(delay):
    """Ctrl-C while the CLI loaded (gRPC and the protobuf modules: half a second or more)
    printed a KeyboardInterrupt traceback through the imports. The command here then waits on
    a server that never answers, so the interrupt lands while it loads (`delay` seconds after
    gRPC began to load) or while it waits (once its connection reached the server; this case
    slept 2 s before)."""
    import socket
    with socket.socket() as silent:  # accepts connections (the backlog), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.setblocking(False)
        connected: list[socket.socket] = []

        def waiting() -> bool:
            with contextlib.suppress(BlockingIOError):
                connected.append(silent.accept()[0])
            return bool(connected)
        try:
            proc, err = _interrupted(
                ["health", "--server", f"127.0.0.1:{silent.getsockname()[1]}", "--timeout", "30"],
                waiting if delay == "waiting" else lambda: True, delay if delay != "waiting" else 0.0)
        finally:
            for conn in connected:
                conn.close()
    assert proc.returncode == 130 and err == "error: interrupted\n", err[-3000:]
    assert delay != "waiting" or connected


def test_ctrl_c_during_a_campaign_export_says_the_file_is_incomplete(served, tmp_path):
    """Ctrl-C cut `campaign export` with only 'error: interrupted': the decisions before it in
    --out, a partial decision log that `training ope` would take whole, not said."""
    from clients import TailorClient
    with TailorClient(served, timeout=120) as client:
        client.create_campaign({"campaign_id": "p-export", "channel": "push", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"title": "A"}}]})
        assert sum(1 for _ in client.plan_campaign("p-export", (f"u{i}" for i in range(30_000)),
                                                   batch_size=1000)) == 30_000
    out = tmp_path / "decisions.jsonl"
    proc, err = _interrupted(["campaign", "export", "--campaign", "p-export", "--include-pending",
                              "--out", str(out), "--server", served],
                             lambda: out.exists() and out.stat().st_size > 0)
    written = len(out.read_text().splitlines())
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    said = re.fullmatch(rf"error: interrupted; {re.escape(str(out))} is incomplete: at least the "
                        r"(\d+) decisions before it were written", err.strip())
    assert said is not None, err
    assert 0 < written < 30_000 and written - int(said[1]) in (0, 1), (written, err)


def test_audit_tail_shows_a_line_torn_by_a_crash_instead_of_failing(server_process, tmp_path):
    """A crash or a full disk cuts the audit line being written; the server writes the next
    one on a line of its own (`audit._line_start`). `audit tail` parsed every line as JSON:
    while the torn one was among the newest N, the auditor's command died with a
    JSONDecodeError traceback. It is shown as `{"unreadable": <its text>}`, in its place."""
    from protos.tailor.v1 import profile_pb2 as pb
    from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
    from server.security import tokens
    auth = tmp_path / "auth.toml"
    admin, auditor = (tokens.mint(auth, name, [name]) for name in ("admin", "auditor"))
    proc = server_process(env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets"),
                               "TAILOR_AUTH_CONFIG": str(auth)})
    meta = (("authorization", f"Bearer {admin}"),)
    with grpc.insecure_channel(proc.target) as ch:
        delete = pb_grpc.ProfileServiceStub(ch).DeleteProfile
        delete(pb.DeleteProfileRequest(user_id="u1"), metadata=meta, timeout=10)
        newest = sorted((tmp_path / "data" / "audit").glob("audit-*.jsonl"))[-1]
        with open(newest, "ab") as fh:
            fh.write(b'{"kid":"k1","method":"/tailor.v1.Prof')  # the crash
        delete(pb.DeleteProfileRequest(user_id="u2"), metadata=meta, timeout=10)
    out = run_module("clients", "audit", "tail", "--server", proc.target, check=False,
                     timeout=120, env={**os.environ, "TAILOR_TOKEN": auditor})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = json.loads(out.stdout)["lines"]
    assert [line.get("status") for line in lines] == ["OK", None, "OK"]
    assert lines[1] == {"unreadable": '{"kid":"k1","method":"/tailor.v1.Prof'}


def test_a_refused_export_or_plan_leaves_the_out_file_as_it_was(own_served, tmp_path):
    """`campaign export` and `campaign plan` emptied --out before the call: a mistyped
    campaign (NOT_FOUND) turned last week's 101-decision export into an empty file. The file
    is emptied at the first answer now; a refused call leaves it, or no file where none was."""
    kept = tmp_path / "decisions.jsonl"
    kept.write_text('{"decision_id": "d1"}\n{"decision_id": "d2"}\n')
    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\n")
    for args in (("campaign", "export", "--campaign", "nope"),
                 ("campaign", "plan", "--campaign", "nope", "--users", str(users), "--quiet")):
        assert cli(*args, "--out", str(kept), "--server", own_served, expect=1) == \
            "error: NOT_FOUND: campaign 'nope' not found"
        assert kept.read_text() == '{"decision_id": "d1"}\n{"decision_id": "d2"}\n'
        fresh = tmp_path / "fresh.jsonl"
        cli(*args, "--out", str(fresh), "--server", own_served, expect=1)
        assert not fresh.exists()
    proc = run_module("clients", "campaign", "export", "--out", str(kept), "--server", own_served)
    assert json.loads(proc.stdout) == {"decisions": 0, "out": str(kept)}  # answered: emptied
    assert kept.read_text() == ""


@pytest.mark.parametrize("args, line", [
    (("audit", "tail", "-n", "-1"), "argument -n: -1 is outside 0..4294967295"),
    (("recommend", "--user", "u1", "-k", "99999999999"),
     "argument -k: 99999999999 is outside -2147483648..2147483647"),
    (("profile", "--user", "u1", "--max-events", "3000000000"),
     "argument --max-events: 3000000000 is outside -2147483648..2147483647"),
])
def test_an_integer_its_request_field_cannot_hold_is_a_usage_error(args, line):
    """Protobuf refused it while the request was built: a ValueError traceback, exit 1."""
    proc = run_module("clients", *args, "--server", f"127.0.0.1:{free_port()}", check=False,
                      timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].endswith(f"error: {line}"), proc.stderr
