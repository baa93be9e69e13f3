"""`loadtests.bench.secured`: the TLS + token setting `bench --tls` serves and calls with."""
from loadtests.bench import secured
from server.security.principals import load_auth_config, token_hash


def test_secured_flags_name_the_files_and_the_token_is_a_decider(tmp_path):
    secure = secured(tmp_path)
    flags = dict(zip(secure.flags[::2], secure.flags[1::2]))
    assert set(flags) == {"--tls-cert", "--tls-key", "--auth-config"}
    config = load_auth_config(flags["--auth-config"])
    principal = config.by_token[token_hash(secure.connection.token)]
    assert "decider" in principal.roles  # Recommend's role; Ping takes any authenticated caller
    assert secure.connection.secure and secure.connection.tls_ca.exists()


def test_secured_token_holds_the_roles_a_bench_sets_up_with(tmp_path):
    from loadtests.bench_campaigns import SETUP_ROLES
    secure = secured(tmp_path, SETUP_ROLES)
    flags = dict(zip(secure.flags[::2], secure.flags[1::2]))
    principal = load_auth_config(flags["--auth-config"]).by_token[token_hash(secure.connection.token)]
    assert set(SETUP_ROLES) <= set(principal.roles)  # CreateCampaign, SetConsent, ChooseVariant
