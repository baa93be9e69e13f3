"""A locustfile option that cannot work (a users file that cannot be read, an SLO naming no
method) stops the run before any user starts: one `error:` line, exit 2, no traceback. Before,
the error was a traceback Locust logged at test start and the run went on without it."""
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ROOT, free_port


def refused(locustfile: str, *args: str) -> str:
    """stderr of a run that must be refused before it starts (nothing listens on the host:
    a run that went on would fail every call instead)."""
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "-u", "2", "-r", "2",
         "-t", "20s", "--only-summary", "--host", f"127.0.0.1:{free_port()}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]
    assert "Traceback" not in out and "Ramping" not in out, out[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out[-4000:]
    return errors[0]


def test_a_users_file_that_cannot_be_read_stops_the_run(tmp_path):
    missing = tmp_path / "users.txt"
    assert refused("loadtests/locustfile.py", "--users-file", str(missing)) == \
        f"error: --users-file {missing}: no such file or directory"
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"1\n\xff\xfe\n")
    line = refused("loadtests/locustfile.py", "--users-file", str(binary))
    assert line.startswith(f"error: --users-file {binary}: ") and "can't decode byte 0xff" in line


def test_a_mix_table_naming_no_method_or_number_stops_the_run():
    """A typo ("Recomend") was a traceback at test start, and the run went on with the default
    weights and SLOs, which then set its exit code."""
    line = refused("loadtests/locust_mix.py", "--slo", "*=5000,Recomend=0.001")
    assert line.startswith("error: --slo: 'Recomend=0.001' is not METHOD=NUMBER (a finite number; "
                           "methods: ")
    line = refused("loadtests/locust_mix.py", "--weights", "Recommend=ten")
    assert line.startswith("error: --weights: 'Recommend=ten' is not METHOD=NUMBER")


def test_connection_options_that_cannot_work_stop_the_run(tmp_path):
    """A --tls-ca that is no PEM file, a --cert without its --key, a token no header can hold:
    each user's start raised ('Unhandled exception in greenlet' tracebacks), and the run went
    on with no user for its whole -t (without -t, for good), then said 'FAILED: p99 inf ms, 0
    failures, 0 task errors', the cause nowhere in its verdict. A --call-timeout that is no
    deadline failed every call instead."""
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello\n")
    for locustfile in ("loadtests/locustfile.py", "loadtests/locust_mix.py"):
        assert refused(locustfile, "--tls-ca", str(not_pem)) == \
            f"error: --tls-ca {not_pem}: not a PEM file (no -----BEGIN line)"
    assert refused("loadtests/locustfile.py", "--cert", str(not_pem)) == \
        "error: a client certificate needs its key: give both --cert and --key"
    assert refused("loadtests/locustfile.py", "--token", "two words").startswith(
        "error: --token: a bearer token is printable ASCII with no spaces")
    for timeout in ("0", "nan", "-1"):
        assert refused("loadtests/locust_mix.py", "--call-timeout", timeout) == \
            f"error: --call-timeout {timeout}: not a number of seconds above 0"


def test_a_token_in_plaintext_to_a_host_off_loopback_stops_the_run():
    """Without --tls-ca the token went as a plaintext header to any --host; --insecure sends it
    anyway (here the run is then refused for its --call-timeout, after the token's check)."""
    host = f"0.0.0.0:{free_port()}"  # not loopback; nothing listens: a run let through fails fast
    assert refused("loadtests/locustfile.py", "--host", host, "--token", "t") == (
        "error: --token: not sent in plaintext to 0.0.0.0, which is not a loopback address "
        "(whoever answers there, or listens on the way, would read it): give --tls-ca to use "
        "TLS, or --insecure to send it anyway")
    assert refused("loadtests/locustfile.py", "--host", host, "--token", "t", "--insecure",
                   "--call-timeout", "0") == "error: --call-timeout 0: not a number of seconds above 0"


def test_a_p99_target_that_is_no_bound_stops_the_run():
    """`--p99-ms nan` passed every run (no p99 is above NaN: exit 0 where 0.001 failed the
    same load) and a negative target failed every one."""
    for target in ("nan", "-5"):
        assert refused("loadtests/locustfile.py", "--p99-ms", target) == \
            f"error: --p99-ms {target}: not a finite number of ms, 0 or more (0: no target)"


def test_a_mix_table_of_a_number_that_is_no_bound_stops_the_run():
    """`--slo '*=nan'` passed every run (no p99 is above NaN: exit 0 where '*=0.001' failed
    the same load), and a NaN weight left its method out unsaid; nan and inf are refused."""
    line = refused("loadtests/locust_mix.py", "--slo", "*=nan")
    assert line.startswith("error: --slo: '*=nan' is not METHOD=NUMBER (a finite number")
    line = refused("loadtests/locust_mix.py", "--weights", "Recommend=inf")
    assert line.startswith("error: --weights: 'Recommend=inf' is not METHOD=NUMBER (a finite")


MIX = ("loadtests/locust_mix.py", "--user-count", "1500", "--item-count", "600",
       "--compose-users", "20", "--slo", "*=5000")


def mix_run(server, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", *MIX, "--headless", "-u", "2", "-r", "2", "-t",
         "4s", "--only-summary", "--stop-timeout", "2", "--host", server.target, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def no_compose_server(module_server_process, demo_bundle):
    """A server as `make serve` runs it (no --public-url: it cannot compose), shared by the
    mix runs that stop at their set-up (each run's set-up fails or passes on its own options;
    the campaign and opt-ins one makes are what a later one would make again)."""
    return module_server_process(bundle=demo_bundle)


def test_the_mix_against_a_server_that_cannot_compose_stops_at_its_set_up(no_compose_server):
    """README's mix against `make serve` (no --public-url): every ComposeMessage failed
    FAILED_PRECONDITION for the whole run (407 of 407 in 20 s), which could never pass. The
    set-up now asks first (a preview) and stops the run saying why and what to do; the way
    it names, leaving ComposeMessage out, passes."""
    server = no_compose_server
    code, out = mix_run(server)
    assert code == 1 and "Traceback" not in out, out[-4000:]
    assert ("FAILED at test start: set-up: ComposeMessage would fail every call: messages need "
            "unsubscribe links") in out and "--weights ComposeMessage=0" in out, out[-4000:]
    assert "--run-time limit reached" not in out and "ComposeMessage:" not in out, out[-4000:]
    code, out = mix_run(server, "--weights", "ComposeMessage=0")
    assert code == 0 and "/ComposeMessage" not in out, out[-4000:]
    assert "/ChooseVariant" in out and "/Recommend" in out, out[-4000:]


def test_a_mix_set_up_the_server_refuses_is_one_line(no_compose_server):
    """The set-up creates the campaign before it checks that the server can compose: an empty
    --campaign is refused first, whether or not the server could compose."""
    code, out = mix_run(no_compose_server, "--campaign", "")
    assert code == 1 and "Traceback" not in out, out[-4000:]
    assert "FAILED at test start: set-up: INVALID_ARGUMENT: campaign_id: is empty" in out
    assert "--run-time limit reached" not in out, out[-4000:]


@contextlib.contextmanager
def web_ui(locustfile: str, *args: str):
    """A `locust` in its web UI mode on a free loopback port (its host: a free port nobody
    listens on), with the page it first answered: (base URL, page)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", locustfile, "--web-host", "127.0.0.1",
         "--web-port", str(port), "--host", f"127.0.0.1:{free_port()}", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, page = time.time() + 60, None
        while page is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    page = answer.read().decode()
            except OSError as err:  # not listening yet; an HTTP 500 is an HTTPError (OSError)
                if getattr(err, "code", None) == 500:
                    raise AssertionError(f"the web UI failed: {err}") from None
                time.sleep(0.3)
        assert page is not None, "the web UI never answered"
        yield f"http://127.0.0.1:{port}", page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start(base: str, **fields: str) -> dict:
    """The web UI's answer to its form's start button, with `fields` over 1 user at rate 1."""
    form = urllib.parse.urlencode({"user_count": "1", "spawn_rate": "1", **fields}).encode()
    try:
        with urllib.request.urlopen(f"{base}/swarm", data=form, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return {"status": err.code}


def test_the_web_ui_shows_neither_the_token_nor_fails_on_the_tls_files(tmp_path):
    """Locust's web UI (its default mode, on every interface by default) printed every option in
    its page: the bearer token in plain text ("token": {"default_value": "<token>"}), and with
    --tls-ca the page failed, 500 'Object of type PosixPath is not JSON serializable'."""
    from loadtests.certs import CertificateAuthority
    ca = CertificateAuthority(tmp_path / "pki")
    with web_ui("loadtests/locustfile.py", "--token", "s3cret-t0ken", "--tls-ca", str(ca.cert)
                ) as (_, page):
        assert "s3cret-t0ken" not in page and str(ca.cert) not in page
        assert "p99_ms" in page  # the locustfile's own options still show


def test_the_web_ui_form_is_checked_as_the_command_line_is(tmp_path):
    """The form can change the options it shows just before users start, after the start-up's
    checks: `p99_ms=nan` was a run no p99 could fail, `call_timeout=0` one whose every call
    failed (both answered `success: true`), `abc` for a number a 500, and a mix table typed into
    the form was never read. Now the same checks answer as Locust answers a bad field."""
    missing = tmp_path / "users.txt"
    with web_ui("loadtests/locustfile.py") as (base, _):
        for fields, message in [
                ({"p99_ms": "nan"}, "--p99-ms nan: not a finite number of ms, 0 or more"),
                ({"call_timeout": "0"}, "--call-timeout 0: not a number of seconds above 0"),
                ({"p99_ms": "abc"}, "--p99-ms 'abc': not a number"),
                ({"users_file": str(missing)}, f"--users-file {missing}: no such file"),
                ({"host": "https://127.0.0.1:1"}, "--host https://127.0.0.1:1: give host:port")]:
            answer = start(base, **fields)
            assert answer.get("success") is False, (fields, answer)
            assert answer["message"].startswith(message), (fields, answer)
        assert start(base, p99_ms="15")["success"] is True  # a sound form starts the run
        urllib.request.urlopen(f"{base}/stop", data=b"", timeout=30).close()
    with web_ui("loadtests/locust_mix.py", "--no-setup") as (base, _):
        answer = start(base, slo="*=nan")
        assert answer.get("success") is False and answer["message"].startswith(
            "--slo: '*=nan' is not METHOD=NUMBER"), answer


def test_a_host_grpc_would_misread_stops_the_run():
    """e68d305 refused URLs in check_target, but the users stripped only a lower-case grpc://
    and http:// first: --host https://... or HTTP://... raised ValueError in every user's start
    ('Unhandled exception in greenlet', naming --server), the run went on with no user and said
    'FAILED: p99 inf ms, 0 failures, 0 task errors'; a port past 65535 likewise."""
    port = free_port()
    for host in (f"https://127.0.0.1:{port}", f"grpcs://127.0.0.1:{port}"):
        scheme = host.split("://")[0]
        for locustfile in ("loadtests/locustfile.py", "loadtests/locust_mix.py"):
            assert refused(locustfile, "--host", host) == \
                f"error: --host {host}: give host:port, without {scheme}://"
    assert refused("loadtests/locustfile.py", "--host", "127.0.0.1:99999") == \
        "error: --host 127.0.0.1:99999: port 99999 is not in 1..65535"


def test_the_host_loses_a_grpc_or_http_scheme_of_any_case():
    """In a child process: importing loadtests.grpc_user brings locust, and gevent's
    monkey-patching with it, into the process that imports it (here: the pytest worker, whose
    later threaded and asyncio tests it broke)."""
    hosts = ["127.0.0.1:50051", "http://127.0.0.1:50051", "HTTP://127.0.0.1:50051",
             "Grpc://127.0.0.1:50051"]
    code = ("import sys; from loadtests.grpc_user import locust_target; "
            "print(*(locust_target(h) for h in sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *hosts], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["127.0.0.1:50051"] * len(hosts)
