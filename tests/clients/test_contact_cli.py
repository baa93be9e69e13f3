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
        == {"removed": True, "unsuppressed": True}
    # a retry (its first answer lost): not removed by it, but off the list
    assert json.loads(cli(server, "suppression", "remove", "--email", "cli.user@example.org").stdout) \
        == {"removed": False, "unsuppressed": True}
    assert not json.loads(cli(server, "suppression", "check", "--email",
                              "cli.user@example.org").stdout)["suppressed"]
    bad = cli(server, "suppression", "add", "--phone", "555 0100", check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "address.phone" in bad.stderr
    token = json.loads(cli(server, "suppression", "add", "--push-token", " APA91b:Cli-Token ").stdout)
    assert (token["suppressed"], token["reason"], token["kind"]) == (True, "manual", "push_token")
    assert not json.loads(cli(server, "suppression", "check", "--push-token",
                              "apa91b:cli-token").stdout)["suppressed"]  # case-sensitive
    bad = cli(server, "suppression", "add", "--push-token", "APA91b Cli", check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and \
        "address.push_token: is not a push token: it contains whitespace" in bad.stderr

    prof = json.loads(cli(server, "consent", "--user", "u1", "--channel", "sms", "--state", "out",
                          "--purpose", "transactional").stdout)
    assert [(c["channel"], c["purpose"], c["opted_in"]) for c in prof["consents"]] == \
        [("sms", "transactional", False)]
    assert prof["consent"] == {} and len(prof["consent_history"]) == 1


def test_the_client_refuses_two_addresses_in_one_suppression_call():
    """`add_suppression(email=..., phone=...)` listed the email alone (the request holds one of
    them) and answered as if the person were listed: their phone kept being texted."""
    import pytest

    from clients import TailorClient
    client = TailorClient("127.0.0.1:9")  # refused before any call: nothing listens there
    for call in (client.add_suppression, client.remove_suppression, client.check_suppression):
        with pytest.raises(ValueError, match="one address, not email and phone "):
            call(email="ann@example.org", phone="+447700900123")
        with pytest.raises(ValueError, match="one address, not phone and push_token "):
            call(phone="+447700900123", push_token="fcm-token")


def test_suppression_check_shows_an_unsubscribe_kept_past_the_erasure(server_process, tmp_path):
    """The erasure of a user who unsubscribed lists their address marketing-only
    (`server.contact.keepout`): `suppression check` says why and that it is marketing only."""
    server = server_process(tmp_path / "data")
    cli(server, "attributes", "--user", "u3", "--set", "email=Leaver@Example.org")
    cli(server, "consent", "--user", "u3", "--channel", "email", "--state", "out")
    cli(server, "delete", "--user", "u3")
    found = json.loads(cli(server, "suppression", "check", "--email", "leaver@example.org").stdout)
    assert (found["suppressed"], found["reason"], found["marketing_only"]) == \
        (True, "unsubscribe", True)
