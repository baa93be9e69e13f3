"""The role table covers every RPC; principals from tokens, certificates and the config file;
the PII policy; the token command and the SIGHUP reload of a running `python -m server`."""
import importlib
import os
import pkgutil
import re
import signal
import stat
import time
from pathlib import Path

import grpc
import pytest

import protos.tailor.v1 as tailor_protos
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.config import Settings
from server.errors import Unauthenticated
from server.security import tokens
from server.security.authn import Authenticator
from server.security.errors import AuthConfigInvalid
from server.security.pii import PiiPolicy
from server.security.principals import load_auth_config, token_hash
from server.security.roles import ANY_AUTHENTICATED, RPC_ROLES, SENSITIVE, RoleTable
from tests.conftest import AWAIT_GO, ROOT, run_at_once, run_module


def _all_rpcs() -> set[str]:
    """Every method of every service the generated descriptors of protos/tailor/v1 declare."""
    out = set()
    for info in pkgutil.iter_modules(tailor_protos.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{tailor_protos.__name__}.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                out |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return out


def test_every_rpc_is_in_the_role_table():
    rpcs = _all_rpcs()
    assert len(rpcs) >= 26
    missing = rpcs - set(RPC_ROLES)
    assert not missing, f"RPCs nobody is allowed to call, add them to RPC_ROLES: {sorted(missing)}"
    services = {m.rsplit("/", 1)[0] for m in rpcs}
    typos = {m for m in set(RPC_ROLES) - rpcs if m.rsplit("/", 1)[0] in services}
    assert not typos, f"RPC_ROLES names methods their services do not declare: {typos}"
    assert SENSITIVE <= rpcs
    table = RoleTable()
    assert all(table.allowed(m) for m in rpcs)


def _doc_table() -> dict[str, str]:
    """docs/auth.md's role table: role (`*` for any authenticated) -> what its row says."""
    text = (ROOT / "docs" / "auth.md").read_text()
    rows = text.split("| role | may call |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [row.strip("|").split("|") for row in rows]
    return {c[0].strip().strip("`").replace("any authenticated", ANY_AUTHENTICATED): c[1]
            for c in cells}


def test_the_docs_role_table_names_every_rpc_under_each_of_its_roles():
    table = _doc_table()
    missing = [(method, role) for method, roles in RPC_ROLES.items() for role in roles
               if not re.search(rf"\b{method.rsplit('/', 1)[1]}\b", table.get(role, ""))]
    assert not missing, f"docs/auth.md's role table misses (method, role): {missing}"


def test_the_docs_name_every_audited_method():
    audit = (ROOT / "docs" / "auth.md").read_text().split("## Audit hook", 1)[1].split("##", 1)[0]
    missing = [m for m in SENSITIVE if not re.search(rf"\b{m.rsplit('/', 1)[1]}\b", audit)]
    assert not missing, f"docs/auth.md's Audit hook misses: {missing}"


def test_role_overrides_replace_a_builtin_role_and_unknown_methods_are_nobodys():
    table = RoleTable({"analyst": ["/tailor.v1.CampaignService/Get*"]})
    assert "analyst" in table.allowed("/tailor.v1.CampaignService/GetCampaignStats")
    assert "analyst" not in table.allowed("/tailor.v1.ProfileService/GetProfile")
    assert "auditor" in table.allowed("/tailor.v1.AuditService/ReadAudit")
    assert table.allowed("/tailor.v1.NewService/Anything") == frozenset()
    assert table.allowed("/tailor.v1.DiagnosticsService/Ping") == {ANY_AUTHENTICATED}


def test_principals_come_from_tokens_and_certificate_names(tmp_path):
    path = tmp_path / "auth.toml"
    token = tokens.mint(path, "ingest", ["tracker"])
    path.write_text(path.read_text() + '\n[principals.ops]\nroles = ["admin"]\n'
                    'cert_subject = "ops.tailor.internal"\n')
    auth = Authenticator(load_auth_config(path))
    assert auth.principal([("authorization", f"Bearer {token}")], dict).roles == {"tracker"}
    assert token not in path.read_text()
    mtls = {"x509_common_name": [b"client-7"], "x509_subject_alternative_name": [b"ops.tailor.internal"]}
    assert auth.principal([], lambda: mtls).name == "ops"
    for metadata, ctx in (([], dict), ([("authorization", "Basic abc")], dict),
                          ([("x-tailor-roles", "admin")], lambda: {"x509_common_name": [b"other"]})):
        with pytest.raises(Unauthenticated):
            auth.principal(metadata, ctx)


def test_minted_tokens_pass_as_a_command_line_value(tmp_path):
    """No token starts with "-" (`--token T` would read it as an option: one in 64 of random
    url-safe tokens would; 1 - (63/64)^400 = 99.8% that one of these 400 would)."""
    path = tmp_path / "auth.toml"
    minted = [tokens.mint(path, f"p{i % 4}", ["tracker"]) for i in range(400)]
    assert not [t for t in minted if t.startswith("-")]
    assert len(set(minted)) == 400 and min(len(t) for t in minted) >= 43


def test_a_bad_auth_config_is_refused_with_its_reason(tmp_path):
    path = tmp_path / "auth.toml"
    for text, reason in (('[principals.x]\nroles = ["root"]\ntoken_sha256 = "00"\n', "unknown roles"),
                         ('[principals.x]\nroles = ["admin"]\n', "token_sha256 or cert_subject"),
                         ('[jwt]\nissuer = "i"\naudience = "a"\njwks = "k.json"\n'
                          'algorithms = ["HS256"]\n', "public-key"),
                         ("[principals\n", "auth config")):
        path.write_text(text)
        with pytest.raises(AuthConfigInvalid, match=reason):
            load_auth_config(path)


def test_an_unknown_role_is_refused_naming_the_roles_there_are(tmp_path):
    """`token --roles trackr` said `unknown roles ['trackr']` and no more: which are there had
    to be looked up in docs/auth.md. A role the config's `[roles]` adds is one of them."""
    path = tmp_path / "auth.toml"
    path.write_text('[roles]\nreport = ["/tailor.v1.CampaignService/Get*"]\n'
                    '[principals.x]\nroles = ["trackr"]\ntoken_sha256 = "00"\n')
    with pytest.raises(AuthConfigInvalid) as err:
        load_auth_config(path)
    assert str(err.value).endswith("principals.x: unknown roles ['trackr'] (the roles: admin, "
                                   "analyst, auditor, decider, pii-reader, report, tracker)")


def test_a_role_named_star_is_refused_not_granted_to_every_principal(tmp_path):
    """`*` is the pseudo-role of any authenticated caller: a `[roles]` entry of that name
    (a typo, a copied pattern) loaded, and every principal could call what it named (a
    tracker's DeleteProfile and ExportProfile were let through)."""
    path = tmp_path / "auth.toml"
    path.write_text('[roles]\n"*" = ["/tailor.v1.ProfileService/*"]\n'
                    f'[principals.ingest]\nroles = ["tracker"]\ntoken_sha256 = "{"ab" * 32}"\n')
    with pytest.raises(AuthConfigInvalid, match=r'roles\."\*": "\*" stands for any authenticated'):
        load_auth_config(path)
    path.write_text('[roles]\nstar = ["/tailor.v1.ProfileService/*"]\n')  # a named role loads
    assert "star" in load_auth_config(path).roles.allowed("/tailor.v1.ProfileService/GetProfile")



@pytest.mark.parametrize("field, first, second", [("token_sha256", "ab" * 32, "AB" * 32),
                                                   ("cert_subject", "ops.example", "ops.example")])
def test_two_principals_with_one_credential_are_refused_naming_both(tmp_path, field, first, second):
    """A copied block whose credential was not changed made that token or certificate silently
    the later principal's: its roles replaced the other's and audit lines named the wrong one
    (a token hash in capitals is the same hash)."""
    path = tmp_path / "auth.toml"
    path.write_text(f'[principals.ops]\nroles = ["admin"]\n{field} = "{first}"\n\n'
                    f'[principals.ops-ro]\nroles = ["analyst"]\n{field} = "{second}"\n')
    with pytest.raises(AuthConfigInvalid, match=f"principals.ops-ro.{field} is also principals.ops's"):
        load_auth_config(path)


def test_an_unusable_jwt_key_file_is_named_with_its_field(tmp_path):
    """Every key failure named the first public key file, as if it were the auth config: a
    broken JWKS beside a good PEM sent the operator to fix the PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    (tmp_path / "ok.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "broken.json").write_text("not json")
    (tmp_path / "list.json").write_text("[]")  # JSON, not a JWKS: was an AttributeError traceback
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    path = tmp_path / "auth.toml"
    head = '[jwt]\nissuer = "i"\naudience = "a"\n'
    for keys, expected in (('public_keys = ["ok.pem"]\njwks = "broken.json"\n',
                            f"jwt.jwks {tmp_path / 'broken.json'}: "),
                           ('public_keys = ["ok.pem", "missing.pem"]\n',
                            f"jwt.public_keys {tmp_path / 'missing.pem'}: No such file"),
                           ('public_keys = ["ok.pem", "bad.pem"]\n',
                            f"jwt.public_keys {tmp_path / 'bad.pem'}: not a PEM public key"),
                           ('jwks = "list.json"\n', f"jwt.jwks {tmp_path / 'list.json'}: not a usable JWKS")):
        path.write_text(head + keys)
        with pytest.raises(AuthConfigInvalid) as err:
            Authenticator(load_auth_config(path))
        assert str(err.value).startswith(f"auth config {path}: {expected}"), str(err.value)


def test_an_auth_config_that_is_not_utf8_is_refused_not_a_traceback(tmp_path):
    """A file saved as UTF-16 (with its byte-order mark, as some editors do) raised
    UnicodeDecodeError: a traceback at start and from `server token`."""
    path = tmp_path / "auth.toml"
    path.write_bytes('[principals.x]\nroles = ["admin"]\ncert_subject = "x"\n'.encode("utf-16"))
    with pytest.raises(AuthConfigInvalid, match="not UTF-8"):
        load_auth_config(path)
    with pytest.raises(AuthConfigInvalid, match="not UTF-8"):
        tokens.mint(path, "ingest", ["tracker"])

JWT = '[jwt]\nissuer = "i"\naudience = "a"\njwks = "k.json"\n'


@pytest.mark.parametrize("text, field", [
    ('roles = "admin"\n', "roles must be a table"),
    ('principals = ["a"]\n', "principals must be a table"),
    ('[principals.x]\nroles = ["admin"]\ntoken_sha256 = "changeme"\n', "x.token_sha256 must be 64 hex"),
    ('[principals.x]\nroles = ["admin"]\ncert_subject = 7\n', "x.cert_subject must be"),
    ('jwt = "x"\n', "jwt must be a table"),
    (JWT + 'leeway_seconds = "soon"\n', "jwt.leeway_seconds"),
    # no bound let an expired JWT pass for good (`inf`), or for a year
    (JWT + "leeway_seconds = inf\n", "jwt.leeway_seconds"),
    (JWT + "leeway_seconds = 31536000\n", "jwt.leeway_seconds"),
    (JWT + "algorithms = [256]\n", "jwt.algorithms must be a list of strings"),
    (JWT + 'algorithms = "RS256"\n', "jwt.algorithms must be a list of strings"),
    ('[jwt]\nissuer = ""\naudience = "a"\njwks = "k.json"\n', "jwt.issuer must be"),
    ('[jwt]\nissuer = "i"\naudience = ["a"]\njwks = "k.json"\n', "jwt.audience must be")])
def test_a_malformed_field_is_named_not_a_traceback(tmp_path, text, field):
    """At start-up, on SIGHUP and in `server token` alike (all read the file the same way)."""
    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(AuthConfigInvalid, match=field):
        load_auth_config(path)
    with pytest.raises(AuthConfigInvalid, match=field):
        tokens.mint(path, "ingest", ["tracker"])


def test_pii_policy_is_case_insensitive_and_declared_in_settings():
    policy = PiiPolicy(Settings().pii_keys)
    values = {"EMAIL": "bob@x.org", "billing_address": "2 Main St", "Mobile_Phone": "+3360000",
              "client_ip": "10.0.0.1", "locale": "en", "tier": "gold", "push_token": "fcm:abc",
              "ios_device_token": "a1b2"}
    assert policy.mask_map(values)
    assert values == {"EMAIL": "b***@x.org", "billing_address": "2***", "Mobile_Phone": "+***",
                      "client_ip": "1***", "locale": "en", "tier": "gold", "push_token": "f***",
                      "ios_device_token": "a***"}
    assert not policy.mask_map({"locale": "en"})


def test_pii_policy_matches_a_keys_nfkc_form_and_masks_lookalike_keys_whatever_they_spell():
    """A store written before look-alike keys were refused holds them: `\u0435mail` (a
    Cyrillic `е`) and `ph\u03bfne` (a Greek omicron) matched no pattern and reached an analyst
    unmasked; so did fullwidth `ｅｍａｉｌ`, mathematical `𝐞𝐦𝐚𝐢𝐥` and `e\u200bmail`, and keys of
    one script that read as a PII key in Latin letters (all-Cyrillic `\u0456\u0440` and
    all-Greek `\u03b9\u03c1` read `ip`), which the API still takes, and keys with a
    character shown as nothing that is not a format character (`e\u115fmail`, a Hangul
    filler). Keys of one script match patterns of that script, case-folded (`STRASSE` is `straße`)."""
    policy = PiiPolicy((*Settings().pii_keys, "телефон", "*straße*"))
    held = ["\u0435mail", "ph\u03bfne", "\uff45\uff4d\uff41\uff49\uff4c", "e\u200bmail",
            "\U0001d41e\U0001d426\U0001d41a\U0001d422\U0001d425", "ТЕЛЕФОН", "home_STRASSE",
            "\uff4c\uff4f\uff43\uff41\uff4c\uff45\u0430"]  # fullwidth `locale`, a Cyrillic а
    held += ["\u0456\u0440", "\u03b9\u03c1", "\u0406\u0420",
             "\u0456\u0440_\u0430\u0501\u0501\u0433\u0435\u0455\u0455"]  # ip_address
    held += ["em\u034fail", "e\u115fmail", "ph\ufe0fone"]  # shown as nothing: a mark, a letter
    kept = {"имя": "x", "電話": "y", "\uff4c\uff4f\uff43\uff41\uff4c\uff45": "en", "город": "z",
            "όνομα": "w"}
    values = dict.fromkeys(held, "carol@example.com") | kept
    assert policy.mask_map(values)
    assert values == dict.fromkeys(held, "c***@example.com") | kept


def test_the_written_config_reads_back_whatever_the_names(tmp_path):
    doc = {"jwt": {"issuer": "https://id", "audience": "t\"x", "public_keys": ["a.pem"],
                   "leeway_seconds": 5.0},
           "roles": {"reporting": ["/tailor.v1.CampaignService/Get*"]},
           "principals": {"a b": {"roles": ["reporting"], "token_sha256": "ab"},
                          "é": {"roles": [], "cert_subject": "x"}}}
    import tomllib
    assert tomllib.loads(tokens.dumps(doc)) == doc


def _denied_everywhere(target: str, meta, connections: int = 8) -> bool:
    """Fresh connections (SO_REUSEPORT spreads them over the workers) all refuse `meta`."""
    for _ in range(connections):
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            try:
                pb_grpc.ProfileServiceStub(ch).GetProfile(pb.GetProfileRequest(user_id="u1"),
                                                          metadata=meta, timeout=10)
                return False
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_token_command_mints_revokes_and_sighup_reloads_a_running_server(tmp_path, demo_bundle,
                                                                         server_process, workers):
    path = tmp_path / "auth.toml"
    minted = run_module("server", "token", "--auth-config", str(path), "--name", "ingest",
                        "--roles", "tracker,analyst")
    token = minted.stdout.strip().splitlines()[-1]
    assert token not in path.read_text() and "ingest" in path.read_text()
    proc = server_process(bundle=demo_bundle, workers=workers, env={"TAILOR_AUTH_CONFIG": str(path)})
    meta = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(proc.target) as ch:
        stub = pb_grpc.ProfileServiceStub(ch)
        stub.UpsertAttributes(pb.UpsertAttributesRequest(user_id="u1", attributes={"tier": "a"}),
                              metadata=meta, timeout=10)
        run_module("server", "token", "--auth-config", str(path), "--revoke", "ingest")
        stub.GetProfile(pb.GetProfileRequest(user_id="u1"), metadata=meta, timeout=10)  # not yet
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while not _denied_everywhere(proc.target, meta):
        assert time.time() < deadline, "the revoked token still works after SIGHUP"
        time.sleep(0.2)
    assert proc.proc.poll() is None, "SIGHUP must reload, not stop the server"
    assert proc.stop().count("auth config reloaded") == workers


def test_an_auth_config_every_user_may_write_is_refused(tmp_path):
    """Whoever can write it grants themselves admin at the next SIGHUP."""
    path = tmp_path / "auth.toml"
    tokens.mint(path, "ops", ["admin"])
    path.chmod(0o646)
    with pytest.raises(AuthConfigInvalid, match=r"every user may write it \(mode 0646\).*chmod o-w"):
        load_auth_config(path)
    path.chmod(0o664)  # a group of operators may keep it
    assert load_auth_config(path).by_token



def test_an_auth_config_in_a_directory_every_user_may_write_is_refused(tmp_path):
    """In a directory every user may write (without the sticky bit), anyone can rename a file
    of their own over the auth config, whatever its mode: a local user did (`mv` as nobody
    over root's 0600 file) and the next SIGHUP made them admin and pii-reader."""
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "auth.toml"
    tokens.mint(path, "ops", ["admin"])
    conf.chmod(0o777)
    with pytest.raises(AuthConfigInvalid, match=r"its directory .*conf: every user may write it "
                                                 r"\(mode 0777\).*chmod o-w"):
        load_auth_config(path)
    conf.chmod(0o1777)  # sticky, as /tmp: only the file's owner may replace it
    assert load_auth_config(path).by_token
    conf.chmod(0o775)
    assert load_auth_config(path).by_token

def test_an_auth_config_below_or_linked_into_a_directory_every_user_may_write_is_refused(tmp_path):
    """Not only its own directory: a 0755 directory inside a 0777 one (anyone may `mv` it
    aside and make their own with an auth.toml of theirs), or a link from a safe directory to
    a file in a 0777 one (anyone may rename their file over the target)."""
    shared, etc = tmp_path / "shared", tmp_path / "etc"
    (shared / "tailor").mkdir(parents=True)
    etc.mkdir()
    below, linked = shared / "tailor" / "auth.toml", shared / "auth.toml"
    tokens.mint(below, "ops", ["admin"])
    tokens.mint(linked, "ops", ["admin"])
    (etc / "auth.toml").symlink_to(linked)
    shared.chmod(0o777)
    try:
        for path, where in ((below, "it"), (etc / "auth.toml", "the file it links to")):
            with pytest.raises(AuthConfigInvalid, match=rf"the directory {shared} above {where}: "
                                                         r"every user may write it \(mode 0777\)"
                                                         rf".*chmod o-w {shared}$"):
                load_auth_config(path)
        shared.chmod(0o1777)  # sticky: nobody may move another's directory or file aside
        assert load_auth_config(below).by_token and load_auth_config(etc / "auth.toml").by_token
    finally:
        shared.chmod(0o755)


@pytest.mark.parametrize("field, keys", [("jwt.jwks", 'jwks = "k.json"'),
                                         ("jwt.public_keys", 'public_keys = ["k.pem"]')])
def test_a_jwt_key_file_every_user_may_write_is_refused(tmp_path, jwt_public, field, keys):
    """The auth config itself was refused when every user may write it, but not the JWT key
    files it names: whoever could write one put their own key in and, at the next SIGHUP,
    signed themselves a JWT with any role."""
    (tmp_path / "k.json").write_text(jwt_public[0])
    (tmp_path / "k.pem").write_bytes(jwt_public[1])
    path = tmp_path / "auth.toml"
    path.write_text(f'[jwt]\nissuer = "i"\naudience = "a"\n{keys}\n')
    key_file = tmp_path / ("k.json" if field == "jwt.jwks" else "k.pem")
    key_file.chmod(0o666)
    with pytest.raises(AuthConfigInvalid, match=rf"{field} {key_file}: every user may write it "
                                                 r"\(mode 0666\).*chmod o-w"):
        Authenticator(load_auth_config(path))
    key_file.chmod(0o664)  # a group of operators may keep it
    assert Authenticator(load_auth_config(path)).jwt is not None


@pytest.fixture
def jwt_public():
    """(a JWKS document, a PEM public key) of one new EC key."""
    import json

    import jwt as pyjwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(public))
    pem = public.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return json.dumps({"keys": [{**jwk, "kid": "k1"}]}), pem


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another account needs root")
def test_the_token_command_run_as_root_keeps_the_auth_configs_owner_and_mode(tmp_path):
    """`sudo python -m server token ...` against a server running as its own account: the
    rewritten file was root's, mode 0600; the server could no longer read it (the SIGHUP
    after a --revoke failed, the revoked token kept working; the next start failed)."""
    path = tmp_path / "auth.toml"
    tokens.mint(path, "ops", ["admin"])
    os.chown(path, 65534, 65534)  # the server's account (here: nobody), its group may read
    path.chmod(0o640)
    run_module("server", "token", "--auth-config", str(path), "--name", "ingest", "--roles",
               "tracker")
    run_module("server", "token", "--auth-config", str(path), "--revoke", "ops")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
    assert [p.name for p in load_auth_config(path).by_token.values()] == ["ingest"]


def test_the_auth_configs_new_copy_is_owner_only_from_its_creation_on(tmp_path, monkeypatch):
    """`server token` wrote the new copy with the umask's mode (0644) and chmodded it 0600
    after: for that moment every local user could read the principals' token hashes. A
    leftover copy of a command that died kept its mode when opened again."""
    old = os.umask(0o022)
    path = tmp_path / "auth.toml"
    leftover = path.with_name(path.name + ".tmp")
    leftover.write_text("")
    leftover.chmod(0o644)
    seen = []  # the copy's mode before each chmod of it, and when it is checked
    real_chmod, real_load = os.chmod, tokens.load_auth_config

    def chmod(target, mode, *args, **kwargs):
        if Path(target) == leftover:
            seen.append(stat.S_IMODE(os.stat(target).st_mode))
        return real_chmod(target, mode, *args, **kwargs)

    def load(target):
        if Path(target) == leftover:
            seen.append(stat.S_IMODE(os.stat(target).st_mode))
        return real_load(target)
    monkeypatch.setattr(os, "chmod", chmod)
    monkeypatch.setattr(tokens, "load_auth_config", load)
    try:
        tokens.mint(path, "ops", ["admin"])
    finally:
        os.umask(old)
    assert seen and set(seen) == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_tokens_minted_and_revoked_at_once_are_all_kept(tmp_path):
    """Eight `server token` runs at the same moment (a provisioning script minting one token
    per service in parallel, an operator revoking meanwhile): each read the file, added its
    principal and wrote it back, so the later writes dropped the earlier ones' principals (a
    printed token that never worked; a revoked principal written back by a mint). Each run
    now holds the auth config's directory locked from its read to its rename."""
    path = tmp_path / "auth.toml"
    tokens.mint(path, "ops", ["admin"])
    script = ("import sys; from pathlib import Path; from server.security import tokens; "
              + AWAIT_GO + "path = Path(sys.argv[1]); "
              "tokens.revoke(path, 'ops') if sys.argv[2] == '-' else "
              "tokens.mint(path, sys.argv[2], ['tracker'])")
    names = ["-", *(f"svc{i}" for i in range(7))]
    ran = run_at_once([["-c", script, str(path), name] for name in names])
    assert [code for code, _ in ran] == [0] * len(names), [err for _, err in ran]
    assert sorted(p.name for p in load_auth_config(path).by_token.values()) == names[1:]


def test_a_token_command_that_may_not_write_beside_the_file_is_one_line(tmp_path):
    """An operator without the rights to write the auth config's directory (without sudo, or
    an immutable directory as here, which stops root too) got a PermissionError traceback."""
    import shutil
    import subprocess
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "auth.toml"
    tokens.mint(path, "ops", ["admin"])
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(conf)], capture_output=True).returncode != 0:
        pytest.skip("no immutable directories here")
    try:
        before = path.read_text()
        for args in (("--name", "ingest", "--roles", "tracker"), ("--revoke", "ops")):
            out = run_module("server", "token", "--auth-config", str(path), *args, check=False)
            assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
            assert out.stderr.startswith(f"token: auth config {path}: cannot write its new copy")
        assert path.read_text() == before
    finally:
        subprocess.run(["chattr", "-i", str(conf)], check=True)


def test_the_token_command_writes_through_a_symlinked_auth_config(tmp_path):
    """`/etc/tailor/auth.toml -> releases/current/auth.toml` (config management's link): the
    command replaced the link with a regular file; the target kept the old principals, and
    whatever reads the target, or restores the link at its next run, undid a `--revoke`."""
    (tmp_path / "releases").mkdir()
    target = tmp_path / "releases" / "auth.toml"
    tokens.mint(target, "ops", ["admin"])
    link = tmp_path / "auth.toml"
    link.symlink_to(target)
    run_module("server", "token", "--auth-config", str(link), "--name", "ingest", "--roles",
               "tracker")
    run_module("server", "token", "--auth-config", str(link), "--revoke", "ops")
    assert link.is_symlink() and link.resolve() == target
    assert [p.name for p in load_auth_config(target).by_token.values()] == ["ingest"]


@pytest.mark.parametrize("action", [["--name", "x", "--roles", "tracker"], ["--revoke", "ops"]])
def test_the_token_command_on_symlinks_that_loop_says_so_in_one_line(tmp_path, action):
    """A config-management link pointed at a link that points back: a RuntimeError traceback."""
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    b.symlink_to(a.name)
    a.symlink_to(b.name)
    out = run_module("server", "token", "--auth-config", str(a), *action, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [f"token: auth config {a}: its symlinks loop (it never "
                                       "reaches a file): point it at the auth config file; "
                                       "nothing was changed"]
    assert a.is_symlink() and b.is_symlink()


def test_certificate_principals_without_a_client_ca_are_called_out(tmp_path, caplog):
    """cert_subject principals authenticate only by a client certificate, which a server
    without --tls-client-ca never asks for: the start and each reload say so."""
    from server.security.guard import AuthGuard
    path = tmp_path / "auth.toml"
    path.write_text('[principals.ops]\nroles = ["admin"]\ncert_subject = "ops.tailor.internal"\n')
    ca = tmp_path / "ca.pem"
    with caplog.at_level("WARNING", logger="tailor.security"):
        AuthGuard(Settings(auth_config=path, tls_client_ca=ca))
        assert not [r for r in caplog.records if "can never authenticate" in r.getMessage()]
        guard = AuthGuard(Settings(auth_config=path))
        guard.reload_auth()
    said = [r.getMessage() for r in caplog.records if "can never authenticate" in r.getMessage()]
    assert len(said) == 2 and "1 certificate principals" in said[0]


def test_the_token_command_refuses_a_principal_that_exists_unless_told_to_replace_it(tmp_path):
    """`token --name ingest` for a new service, the name already taken: the command swapped
    that principal's token and roles without a word, cutting off whoever held its token."""
    path = tmp_path / "auth.toml"
    old = tokens.mint(path, "ingest", ["tracker"])
    before = path.read_text()
    args = ("token", "--auth-config", str(path), "--name", "ingest", "--roles", "admin")
    refused = run_module("server", *args, check=False)
    assert refused.returncode == 1 and path.read_text() == before
    assert refused.stderr.splitlines() == [
        f"token: auth config {path}: principal 'ingest' exists (roles: tracker): --replace gives "
        "it a new token (its old one stops working) and the roles given; nothing was changed"]
    replaced = run_module("server", *args, "--replace")
    assert replaced.stdout.startswith("replaced the token and roles (tracker) of ingest")
    by_token = load_auth_config(path).by_token
    new = replaced.stdout.splitlines()[-1]
    assert token_hash(old) not in by_token
    assert by_token[token_hash(new)].roles == {"admin"}


@pytest.mark.parametrize("roles", [[], ["--roles", ""], ["--roles", " , "]])
def test_the_token_command_refuses_a_principal_without_roles(tmp_path, roles):
    """`--roles` forgotten made a principal that may call only Ping, and said nothing of it."""
    path = tmp_path / "auth.toml"
    out = run_module("server", "token", "--auth-config", str(path), "--name", "ingest", *roles,
                     check=False)
    assert out.returncode == 1 and not path.exists()
    assert out.stderr.startswith("token: --roles is required with --name: a comma-separated "
                                 "list of admin, analyst, auditor, decider, pii-reader, tracker")


@pytest.mark.parametrize("action", [["--name", "x", "--roles", "tracker"], ["--revoke", "ops"]])
def test_the_token_command_in_a_directory_that_does_not_exist_says_so_in_one_line(tmp_path, action):
    """A mistyped directory printed `token: [Errno 2] No such file or directory: '/dir'`."""
    path = tmp_path / "nodir" / "auth.toml"
    out = run_module("server", "token", "--auth-config", str(path), *action, check=False)
    assert out.returncode == 1 and out.stderr.splitlines() == [
        f"token: auth config {path}: no directory {path.parent}: give --auth-config a file in a "
        "directory that exists (or make it first); nothing was changed"]
