"""`python -m clients suppression ...` and `consent --purpose` against a real server process."""
import json

from tests.conftest import run_module


def cli(server, *args, check=True):
    return run_module("clients", *args, "--server", server.target, check=check)


def test_suppression_and_consent_purpose_commands(server_process, tmp_path):
    server = server_process(tmp_path / "data")
    added = json.loads(cli(server, "suppression", "add", "--email", "Cli.User@Example.org",
                           "--reason", "complaint").stdout)
    assert (added["suppressed"], added["reason"], added["kind"]) == (True, "complaint", "email")
    found = json.loads(cli(server, "suppression", "check", "--email", "cli.user@example.org").stdout)
    assert found["suppressed"] and found["reason"] == "complaint"
    assert json.loads(cli(server, "suppression", "remove", "--email", "cli.user@example.org").stdout) \
        == {"removed": True}
    assert not json.loads(cli(server, "suppression", "check", "--email",
                              "cli.user@example.org").stdout)["suppressed"]
    bad = cli(server, "suppression", "add", "--phone", "555 0100", check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "address.phone" in bad.stderr

    prof = json.loads(cli(server, "consent", "--user", "u1", "--channel", "sms", "--state", "out",
                          "--purpose", "transactional").stdout)
    assert [(c["channel"], c["purpose"], c["opted_in"]) for c in prof["consents"]] == \
        [("sms", "transactional", False)]
    assert prof["consent"] == {} and len(prof["consent_history"]) == 1
