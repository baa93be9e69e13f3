"""`python -m clients campaign send` whose answer never came: the job may have started, so the
error names the request id that repeats the call instead of starting a second send."""
import json
import re
import time
from collections import Counter

from clients import TailorClient
from loadtests.smtp_sink import SmtpSink
from tests.clients.proxy import LosingProxy
from tests.conftest import free_port, run_module

USERS = [f"s{i:02d}" for i in range(6)]
HTML = "<p>Hi</p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>"


def _audience(target: str) -> None:
    """An email campaign `mail` and `USERS` opted in with addresses."""
    with TailorClient(target, timeout=30) as client:
        client.create_campaign({"campaign_id": "mail", "channel": "email", "policy": "fixed",
                                "variants": [{"id": "v1", "content": {
                                    "subject": "Hi", "html": HTML,
                                    "text": "{{ unsubscribe_url }}"}}]})
        for u in USERS:
            client.upsert_attributes(u, {"email": f"{u}@example.com"})
            client.set_consent(u, "email", True, "signup")


def _done(target: str, send_id: str) -> dict:
    deadline = time.time() + 60
    while time.time() < deadline:
        got = json.loads(run_module("clients", "campaign", "progress", "--send", send_id,
                                    "--server", target).stdout)
        if got["done"]:
            return got
        time.sleep(0.2)
    raise AssertionError(f"send {send_id} not done: {got}")


def test_a_send_whose_answer_was_lost_names_the_request_id_that_repeats_it(
        server_process, tmp_path, demo_bundle):
    """Measured before: 'error: DEADLINE_EXCEEDED: Deadline Exceeded' and nothing more, the job
    running; the same command again started a second job (300 recipients, 527 messages, two
    for most)."""
    with SmtpSink(free_port()) as sink:
        server = server_process(tmp_path / "data", bundle=demo_bundle, env={
            "TAILOR_SMTP_HOST": "127.0.0.1", "TAILOR_SMTP_PORT": str(sink.controller.port),
            "TAILOR_SMTP_SECURITY": "none", "TAILOR_PUBLIC_URL": "http://127.0.0.1:9",
            "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
        _audience(server.target)
        users = tmp_path / "users.txt"
        users.write_text("\n".join(USERS) + "\n")
        proxy = LosingProxy(server.port)
        try:
            proxy.lose_next(100)  # every attempt the channel makes
            lost = run_module("clients", "campaign", "send", "--campaign", "mail", "--users",
                              str(users), "--server", proxy.target, check=False)
        finally:
            proxy.close()
        assert lost.returncode == 1 and not lost.stdout and "Traceback" not in lost.stderr
        line = lost.stderr.strip()
        assert line.startswith("error: UNAVAILABLE: ") and len(line.splitlines()) == 1, line
        found = re.search(r"again with --request-id (\S+) ", line)
        assert found and "may have started" in line, line
        again = run_module("clients", "campaign", "send", "--campaign", "mail", "--users",
                           str(users), "--request-id", found[1], "--server", server.target)
        send_id = json.loads(again.stdout)["send_id"]
        assert _done(server.target, send_id)["sent"] == len(USERS)
        time.sleep(1)  # a second job, had one started, would be sending by now
        assert Counter(r[0] for _, r, _ in sink.arrived) == Counter(
            {f"{u}@example.com": 1 for u in USERS})


def test_a_refused_send_says_nothing_of_a_request_id(server_process, tmp_path):
    """A status that refused the call (nothing started) is printed as it is."""
    server = server_process(tmp_path / "data", env={"TAILOR_SECRETS_DIR": str(tmp_path / "s")})
    users = tmp_path / "users.txt"
    users.write_text("u1\n")
    proc = run_module("clients", "campaign", "send", "--campaign", "nope", "--users", str(users),
                      "--server", server.target, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: NOT_FOUND: campaign 'nope' not found"


def test_a_rollback_whose_answer_was_lost_says_to_look_before_another(
        server_process, tmp_path, demo_bundle, second_bundle, demo_manifest):
    """Measured before: 'error: UNAVAILABLE: Stream removed (Socket closed)' alone, the rollback
    made; the same command again went one version further back than meant."""
    server = server_process(tmp_path / "data", bundle=demo_bundle,
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    with TailorClient(server.target, timeout=60) as client:
        client.push_bundle(second_bundle)
    proxy = LosingProxy(server.port)
    try:
        proxy.lose_next(100)
        lost = run_module("clients", "rollback", "--server", proxy.target, check=False)
    finally:
        proxy.close()
    line = lost.stderr.strip()
    assert lost.returncode == 1 and len(line.splitlines()) == 1, lost.stderr
    assert line.startswith("error: UNAVAILABLE: ") and line.endswith(
        "the rollback may have been made: see `status` before rolling back again (a second "
        "one goes one version further back)"), line
    status = json.loads(run_module("clients", "status", "--server", server.target).stdout)
    assert status["active"]["version"] == demo_manifest["version"]  # it was made


def test_a_create_or_a_promotion_whose_answer_was_lost_says_to_look_before_another(
        server_process, tmp_path, demo_bundle, second_bundle):
    """Not retried (a repeat is refused: 'already exists', 'no canary is running'); the line
    said only UNAVAILABLE, and the repeat's refusal read as if the first had failed."""
    server = server_process(tmp_path / "data", bundle=demo_bundle,
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    with TailorClient(server.target, timeout=60) as client:
        client.push_bundle(second_bundle, canary_percent=10)
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"campaign_id": "lost", "policy": "bernoulli_ts",
                                "variants": [{"id": "a"}, {"id": "b"}]}))
    proxy = LosingProxy(server.port)
    try:
        lines = []
        for args in (("campaign", "create", "--file", str(spec)), ("model", "promote")):
            proxy.lose_next(100)
            lost = run_module("clients", *args, "--server", proxy.target, check=False)
            assert lost.returncode == 1 and len(lost.stderr.strip().splitlines()) == 1
            lines.append(lost.stderr.strip())
    finally:
        proxy.close()
    assert lines[0].startswith("error: UNAVAILABLE: ") and lines[0].endswith(
        "the campaign may have been created: see `campaign list` before doing it again (a "
        "second create is refused: already exists)"), lines[0]
    assert lines[1].startswith("error: UNAVAILABLE: ") and lines[1].endswith(
        "the canary may have been promoted: see `status` before doing it again (a second one "
        "is refused: no canary is running)"), lines[1]
    listed = json.loads(run_module("clients", "campaign", "list", "--server", server.target).stdout)
    status = json.loads(run_module("clients", "status", "--server", server.target).stdout)
    assert [c["spec"]["campaign_id"] for c in listed["campaigns"]] == ["lost"]
    assert status["active"]["version"] == json.loads(
        (second_bundle / "manifest.json").read_text())["version"]  # both were made
