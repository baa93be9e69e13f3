"""Authentication, roles and PII masking through a real server with an auth config (issue 14)."""
import asyncio
import contextlib
import json
import logging
import re
import time

import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tailor.v1 import audit_pb2 as apb
from protos.tailor.v1 import audit_pb2_grpc as apb_grpc
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc as dpb_grpc
from protos.tailor.v1 import model_admin_pb2 as mpb
from protos.tailor.v1 import model_admin_pb2_grpc as mpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.security import tokens
from tests.conftest import server_settings, serving

ISSUER, AUDIENCE = "https://id.test", "tailor"
ROLES = {"admin": ["admin"], "decider": ["decider"], "tracker": ["tracker"],
         "analyst": ["analyst"], "reader": ["analyst", "pii-reader"], "auditor": ["auditor"]}


@pytest.fixture(scope="module")
def jwt_keys():
    return {"ec": ec.generate_private_key(ec.SECP256R1()),
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


def auth_config(tmp, jwt_keys):
    """An auth config under `tmp` with one token principal per role set, an ES256 key and an
    RS256 JWKS: (its path, the tokens by name)."""
    path = tmp / "auth.toml"
    (tmp / "ec.pem").write_bytes(jwt_keys["ec"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(jwt_keys["rsa"].public_key()))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "r1", "alg": "RS256"}]}))
    path.write_text(f'[jwt]\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
                    'public_keys = ["ec.pem"]\njwks = "jwks.json"\n')
    toks = {name: tokens.mint(path, name, roles) for name, roles in ROLES.items()}
    return path, toks


@pytest.fixture
def auth(tmp_path, jwt_keys):
    return auth_config(tmp_path, jwt_keys)


@pytest.fixture(scope="module")
def module_auth(tmp_path_factory, jwt_keys):
    """`auth` of the server the module's tests share (`shared_chan`)."""
    return auth_config(tmp_path_factory.mktemp("module-auth"), jwt_keys)


@pytest_asyncio.fixture
async def chan(secured):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as ch:
        yield ch


@pytest_asyncio.fixture(scope="module")
async def shared_chan(tmp_path_factory, demo_bundle, module_auth):
    """A channel to one server of `module_auth`'s config, shared by the tests whose calls are
    refused, read what no test changes, or write under user ids of their own (none revokes,
    reloads the config or counts what the others did)."""
    settings = server_settings(tmp_path_factory.mktemp("secured-server"), demo_bundle)
    async with serving(settings.model_copy(update={"auth_config": module_auth[0]})) as (_, ch):
        yield ch


def bearer(token, *extra):
    return (("authorization", f"Bearer {token}"), *extra)


async def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        await call
    return err.value.code(), err.value.details()


async def _refused_unwritten(call) -> tuple[grpc.StatusCode, str]:
    """The final status of a request-streaming `call` opened with no request iterator, to which
    nothing is written, for the refusals the server sends without reading the stream first
    (UNAUTHENTICATED: a stranger's stream is not read; gRPC's own UNIMPLEMENTED): a request
    written beside one can race it, and grpc.aio's client then ends the call with its own
    INTERNAL ("Internal error from Core", grpc/grpc#36066) instead of the server's status.
    (Other refusals are sent once the stream is read to its end: `server.rpc`.) A call the
    server took would wait for a request, and the wait times out."""
    code = await asyncio.wait_for(call.code(), 30)
    return code, await call.details()


async def test_no_or_unknown_token_is_unauthenticated(shared_chan):
    stub = pb_grpc.ProfileServiceStub(shared_chan)
    req = pb.GetProfileRequest(user_id="u1")
    assert (await _code(stub.GetProfile(req)))[0] == grpc.StatusCode.UNAUTHENTICATED
    code, _ = await _code(stub.GetProfile(req, metadata=bearer("not-a-token")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = await _code(dpb_grpc.DiagnosticsServiceStub(shared_chan).Ping(dpb.PingRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_stay_open_and_ping_takes_any_principal(shared_chan,
                                                                            module_auth):
    reply = await health_pb2_grpc.HealthStub(shared_chan).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await dpb_grpc.DiagnosticsServiceStub(shared_chan).Ping(
        dpb.PingRequest(), metadata=bearer(module_auth[1]["tracker"]))


async def test_reflection_takes_any_authenticated_caller_and_no_anonymous_one(shared_chan,
                                                                              module_auth):
    """Reflection names every service and method: anonymous callers of a server with an auth
    config were served it (the service list, UNAUTHENTICATED now); a token of any role is."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(shared_chan)

    def listing(*metadata):
        return stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata)
    for refused in ((), bearer("not-a-token")):
        code, _ = await _refused_unwritten(stub.ServerReflectionInfo(metadata=refused))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    replies = [reply async for reply in listing(*bearer(module_auth[1]["tracker"]))]
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"tailor.v1.ProfileService", "grpc.health.v1.Health"} <= names


async def test_open_methods_refuse_a_large_request_unparsed(shared_chan, module_auth):
    """Health is open to anyone, and gRPC reads a request whole (up to 64 MiB) before any
    handler: a stranger's Health/Watch held its request as long as the stream stayed open
    (eight 60 MiB ones took a server from 206 MB to 1,608 MB, for good); reflection's
    requests (a symbol name) are as bounded, for the callers it takes."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    health = health_pb2_grpc.HealthStub(shared_chan)
    big = health_pb2.HealthCheckRequest(service="x" * 65536)
    watch = health.Watch(big)
    with pytest.raises(grpc.RpcError) as err:
        await watch.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 4096" in err.value.details()
    assert (await _code(health.Check(big)))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    reflect = reflection_pb2_grpc.ServerReflectionStub(shared_chan).ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="x" * 65536)]),
        metadata=bearer(module_auth[1]["tracker"]))
    with pytest.raises(grpc.RpcError) as err:
        [reply async for reply in reflect]
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    watch = health.Watch(health_pb2.HealthCheckRequest(service="tailor.v1.ProfileService"))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING  # as before
    watch.cancel()


async def test_open_methods_answer_a_malformed_request_or_health_list_in_a_status_not_a_traceback(
        shared_chan, module_auth, caplog):
    """A stranger's Health/Check or Watch whose bytes do not parse was UNKNOWN ("Unexpected
    <class 'DecodeError'>") and Health/List (which grpc's aio servicer lacks) an UNIMPLEMENTED
    from a NotImplementedError, each logged at ERROR with its traceback (2,000 anonymous
    calls: 0.8-1.2 MB of log in under a second); a malformed reflection request likewise."""
    raw = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    garbage = b"\xff\xff\xff"
    caplog.set_level(logging.INFO)
    for method in ("Check", "Watch"):
        call = (shared_chan.unary_stream if method == "Watch" else shared_chan.unary_unary)(
            f"/grpc.health.v1.Health/{method}", **raw)(garbage)
        code, details = await _code(_drained(call) if method == "Watch" else call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, details)
        assert details.startswith("request: not a valid grpc.health.v1.Health/"), details
    code, details = await _code(health_pb2_grpc.HealthStub(shared_chan).List(
        health_pb2.HealthListRequest()))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "Health/Check" in details, details
    reflect = shared_chan.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        **raw)(iter([garbage]), metadata=bearer(module_auth[1]["tracker"]))
    code, details = await _code(_drained(reflect))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage()[:200] for r in caplog.records if r.levelno >= logging.WARNING]
    assert (await health_pb2_grpc.HealthStub(shared_chan).Check(
        health_pb2.HealthCheckRequest())).status \
        == health_pb2.HealthCheckResponse.SERVING  # a real check as before


async def _drained(call):
    return [reply async for reply in call]


async def test_decider_may_not_push_or_delete_and_is_told_which_role_it_lacks(shared_chan,
                                                                              module_auth):
    token = module_auth[1]["decider"]
    code, details = await _code(mpb_grpc.ModelAdminServiceStub(shared_chan).PushBundle(
        iter([mpb.BundleChunk(path="manifest.json", data=b"{}")]), metadata=bearer(token)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "admin" in details and "decider" in details
    code, details = await _code(pb_grpc.ProfileServiceStub(shared_chan).DeleteProfile(
        pb.DeleteProfileRequest(user_id="u1"), metadata=bearer(token)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "lacks the role admin" in details
    with pytest.raises(grpc.RpcError) as err:  # a streaming reply is refused before its first message
        [e async for e in pb_grpc.ProfileServiceStub(shared_chan).ExportEvents(
            pb.ExportEventsRequest(), metadata=bearer(token))]
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "analyst or pii-reader" in err.value.details()


async def test_a_spoofed_roles_header_changes_nothing(shared_chan, module_auth):
    profiles = pb_grpc.ProfileServiceStub(shared_chan)
    spoof = ("x-tailor-roles", "admin,pii-reader")
    code, _ = await _code(profiles.DeleteProfile(
        pb.DeleteProfileRequest(user_id="u1"), metadata=bearer(module_auth[1]["decider"], spoof)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await _code(profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="u1"),
                                                 metadata=(spoof,)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="dave", attributes={"email": "dave@example.com"}),
        metadata=bearer(module_auth[1]["tracker"]))
    seen = await profiles.GetProfile(pb.GetProfileRequest(user_id="dave"),
                                     metadata=bearer(module_auth[1]["analyst"], spoof))
    assert seen.pii_masked and seen.attributes["email"] == "d***@example.com"


async def test_analyst_sees_pii_masked_and_pii_reader_unmasked(shared_chan, module_auth):
    profiles, t = pb_grpc.ProfileServiceStub(shared_chan), module_auth[1]
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="carol", attributes={"Email": "carol@example.com", "home_address": "1 Rue X",
                                     "locale": "fr-FR"}), metadata=bearer(t["tracker"]))
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="s1", user_id="carol", type="click", item_id="i1", timestamp=time.time() - 5,
        attributes={"ip": "10.1.2.3", "page": "home"})]), metadata=bearer(t["tracker"]))
    req = pb.GetProfileRequest(user_id="carol", max_events=5)
    masked = await profiles.GetProfile(req, metadata=bearer(t["analyst"]))
    assert masked.pii_masked and masked.attributes["Email"] == "c***@example.com"
    assert masked.attributes["home_address"] == "1***" and masked.attributes["locale"] == "fr-FR"
    assert dict(masked.events[0].attributes) == {"ip": "1***", "page": "home"}
    full = await profiles.GetProfile(req, metadata=bearer(t["reader"]))
    assert not full.pii_masked and full.attributes["Email"] == "carol@example.com"
    assert full.events[0].attributes["ip"] == "10.1.2.3"
    export = pb.ExportEventsRequest(start=0, end=time.time() + 60)
    masked_ev = [e async for e in profiles.ExportEvents(export, metadata=bearer(t["analyst"]))]
    full_ev = [e async for e in profiles.ExportEvents(export, metadata=bearer(t["reader"]))]
    assert [e.attributes["ip"] for e in masked_ev if e.event_id == "s1"] == ["1***"]
    assert [e.attributes["ip"] for e in full_ev if e.event_id == "s1"] == ["10.1.2.3"]


async def test_pii_keys_are_masked_in_any_spelling(shared_chan, module_auth):
    """Before: `pii_keys` matched the key lower-cased only, so an app's camelCase or dashed
    keys (firstName, lastName, postalCode, userIP, dateOfBirth, first-name) and given_name,
    family_name, zip_code reached an analyst as written."""
    profiles, t = pb_grpc.ProfileServiceStub(shared_chan), module_auth[1]
    pii = {"firstName": "Alicia", "FirstName": "Alicia", "lastName": "Smith", "fullName": "A S",
           "first-name": "Alicia", "given_name": "Alicia", "family_name": "Smith",
           "postalCode": "SW1A 1AA", "zipCode": "90210", "zip_code": "90210",
           "dateOfBirth": "1990-01-01", "userIP": "203.0.113.7", "IPAddress": "203.0.113.7"}
    plain = {"locale": "en-GB", "campaign_name": "spring", "membership": "gold", "VIPLevel": "2"}
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="erin", attributes={**pii, **plain}), metadata=bearer(t["tracker"]))
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="camel-1", user_id="erin", type="click", item_id="i1", timestamp=time.time() - 5,
        attributes={"clientIp": "203.0.113.7", "pageName": "home"})]), metadata=bearer(t["tracker"]))
    req = pb.GetProfileRequest(user_id="erin", max_events=5)
    masked = await profiles.GetProfile(req, metadata=bearer(t["analyst"]))
    assert {k: v for k, v in masked.attributes.items() if k in pii} == {
        k: v[:1] + "***" for k, v in pii.items()}
    assert {k: v for k, v in masked.attributes.items() if k in plain} == plain
    assert dict(masked.events[0].attributes) == {"clientIp": "2***", "pageName": "home"}
    full = await profiles.GetProfile(req, metadata=bearer(t["reader"]))
    assert dict(full.attributes) == {**pii, **plain}


async def test_pii_keys_name_user_names_and_ip_v4_v6_addresses(shared_chan, module_auth):
    """Before: user names (username, userName, displayName, nickname, customer_name) and IP
    addresses under ipv4/ipv6 keys (ipv6, IPv6, clientIPv6, whose snake case reads
    `client_i_pv6`) reached an analyst as written; other *_name keys stay unmasked."""
    profiles, t = pb_grpc.ProfileServiceStub(shared_chan), module_auth[1]
    pii = {"username": "alicia.s", "userName": "alicia.s", "user_name": "alicia.s",
           "twitterUsername": "alicia_s", "displayName": "Alicia S", "screen_name": "alicias",
           "nickname": "Ali", "customer_name": "Alicia Smith", "contactName": "Alicia Smith",
           "ipv6": "2001:db8::7", "IPv6": "2001:db8::7", "clientIPv6": "2001:db8::7",
           "ipv4": "203.0.113.7"}
    plain = {"pageName": "home", "campaign_name": "spring", "productName": "mug",
             "tipAmount": "2"}
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="fay", attributes={**pii, **plain}), metadata=bearer(t["tracker"]))
    req = pb.GetProfileRequest(user_id="fay", max_events=1)
    masked = await profiles.GetProfile(req, metadata=bearer(t["analyst"]))
    assert {k: v for k, v in masked.attributes.items() if k in pii} == {
        k: v[:1] + "***" for k, v in pii.items()}
    assert {k: v for k, v in masked.attributes.items() if k in plain} == plain
    full = await profiles.GetProfile(req, metadata=bearer(t["reader"]))
    assert dict(full.attributes) == {**pii, **plain}


def _jwt(jwt_keys, kind="ec", **claims):
    body = {"sub": "svc-7", "iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 300,
            "roles": ["decider"], **claims}
    if kind == "ec":
        return jwt.encode(body, jwt_keys["ec"], algorithm="ES256")
    return jwt.encode(body, jwt_keys["rsa"], algorithm="RS256", headers={"kid": "r1"})


async def test_jwts_are_checked_for_signature_issuer_audience_and_expiry(shared_chan, jwt_keys):
    stub = cpb_grpc.CampaignServiceStub(shared_chan)
    req = cpb.ListCampaignsRequest()
    for kind in ("ec", "rsa"):
        await stub.ListCampaigns(req, metadata=bearer(_jwt(jwt_keys, kind, roles="analyst")))
    cases = {"expired": _jwt(jwt_keys, exp=time.time() - 60),
             "audience": _jwt(jwt_keys, aud="someone-else"),
             "issuer": _jwt(jwt_keys, "rsa", iss="https://evil.test"),
             "signature": jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE,
                                      "exp": time.time() + 60, "roles": ["analyst"]},
                                     ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")}
    for why, token in cases.items():
        code, details = await _code(stub.ListCampaigns(req, metadata=bearer(token)))
        assert code == grpc.StatusCode.UNAUTHENTICATED, why
        assert why in details, (why, details)
    code, details = await _code(stub.ListCampaigns(req, metadata=bearer(_jwt(jwt_keys))))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "jwt:svc-7" in details


async def test_a_jwt_roles_claim_that_is_not_role_names_is_refused(shared_chan, jwt_keys):
    """A signed token whose roles claim is a number or an object is refused with
    UNAUTHENTICATED (a number made every call fail with a traceback; an object's keys were
    granted as roles)."""
    stub, req = cpb_grpc.CampaignServiceStub(shared_chan), cpb.ListCampaignsRequest()
    for roles in (7, {"analyst": False}, ["analyst", 3]):
        code, details = await _code(stub.ListCampaigns(req, metadata=bearer(_jwt(jwt_keys, roles=roles))))
        assert code == grpc.StatusCode.UNAUTHENTICATED, roles
        assert "claim is not a list of role names" in details
    await stub.ListCampaigns(req, metadata=bearer(_jwt(jwt_keys, roles=["analyst"])))
    # each refusal cost a signature check, every time: they count toward the address's budget
    same = bearer(_jwt(jwt_keys, roles=7))
    for _ in range(25):
        code, details = await _code(stub.ListCampaigns(req, metadata=same))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "too many invalid tokens" in details


class AuditRecords:
    """Stands in for the audit log (server/security/audit.py): keeps what it is given."""

    def __init__(self):
        self.rows = []

    def record(self, principal, method, target, status, request_id, **details):
        self.rows.append((principal, method.rsplit("/", 1)[1], target, status, request_id))


@contextlib.asynccontextmanager
async def audited(settings, auth):
    """(channel, the audit hook's records) of a server with the auth config; it is stopped on
    leaving, which writes the failed authentication still being counted."""
    from server.app import TailorServer
    server = TailorServer(settings.model_copy(update={"auth_config": auth[0]}))
    server.audit = audit = AuditRecords()
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            yield ch, audit
    finally:
        await server.stop(grace=0.5)


async def test_denied_failed_and_sensitive_calls_reach_the_audit_hook(settings, auth):
    async with audited(settings, auth) as (ch, audit):
        profiles, t = pb_grpc.ProfileServiceStub(ch), auth[1]
        rid = ("x-request-id", "r-42")
        await _code(profiles.GetProfile(pb.GetProfileRequest(user_id="u9")))
        await _code(profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="u9"),
                                           metadata=bearer(t["decider"], rid)))
        await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
            user_id="u9", attributes={"phone": "+33 6"}), metadata=bearer(t["tracker"]))
        await profiles.GetProfile(pb.GetProfileRequest(user_id="u9"), metadata=bearer(t["analyst"]))
        await profiles.GetProfile(pb.GetProfileRequest(user_id="u9"), metadata=bearer(t["reader"]))
        await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="u9"),
                                     metadata=bearer(t["admin"], rid))
        await _code(profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="bad\x1fid"),
                                           metadata=bearer(t["admin"])))
        [e async for e in profiles.ExportEvents(pb.ExportEventsRequest(), metadata=bearer(t["analyst"]))]
    # a call without x-request-id is audited under the id the server made for it (16 hex digits)
    made = [re.fullmatch(r"[0-9a-f]{16}", row[4]) is not None for row in audit.rows]
    assert [row[:4] + ("" if m else row[4],) for row, m in zip(audit.rows, made)] == [
        ("unauthenticated", "GetProfile", "", "UNAUTHENTICATED", ""),
        ("decider", "DeleteProfile", "u9", "PERMISSION_DENIED", "r-42"),  # who was aimed at
        ("reader", "GetProfile", "u9", "OK", ""),  # unmasked read; the analyst's is not audited
        ("admin", "DeleteProfile", "u9", "OK", "r-42"),
        ("admin", "DeleteProfile", "bad\x1fid", "INVALID_ARGUMENT", ""),
        ("analyst", "ExportEvents", "", "OK", ""),
    ]
    assert made == [True, False, True, False, True, True]


async def test_exported_decisions_hide_request_context_under_pii_keys(chan, auth):
    stub, t = cpb_grpc.CampaignServiceStub(chan), auth[1]
    spec = cpb.CampaignSpec(campaign_id="c-pii", channel="push", policy="egreedy",
                            context_features=["request.phone", "request.basket"],
                            variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])
    await stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec), metadata=bearer(t["admin"]))
    await stub.ChooseVariant(cpb.ChooseVariantRequest(
        campaign_id="c-pii", user_id="u1", context={"phone": 33612.0, "basket": 3.0}),
        metadata=bearer(t["decider"]))
    req = cpb.ExportDecisionsRequest(include_pending=True)
    masked = [list(r.context) async for r in stub.ExportDecisions(req, metadata=bearer(t["analyst"]))]
    full = [list(r.context) async for r in stub.ExportDecisions(req, metadata=bearer(t["reader"]))]
    assert len(masked) == 1 and masked[0][1] == 3.0 and masked[0][0] != masked[0][0]  # NaN
    assert full == [[33612.0, 3.0]]


async def test_error_messages_do_not_echo_attribute_values(shared_chan, module_auth):
    t = module_auth[1]
    bad = pb.UpsertAttributesRequest(user_id="eve", attributes={"email": "eve-" + "x" * 2000})
    code, details = await _code(pb_grpc.ProfileServiceStub(shared_chan).UpsertAttributes(
        bad, metadata=bearer(t["tracker"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "eve-" not in details  # no PII echoed


async def test_reflection_can_be_turned_off(settings):
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    from server.app import TailorServer
    server = TailorServer(settings.model_copy(update={"reflection": False}))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            code, _ = await _refused_unwritten(
                reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo())
            assert code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(grace=0.5)


async def test_the_audit_log_records_what_the_interceptor_decides_and_verifies(secured, chan, auth):
    """End to end: the server's own AuditLog behind the auth interceptor, read by an auditor."""
    t, profiles = auth[1], pb_grpc.ProfileServiceStub(chan)
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="u-audit", attributes={"plan": "gold"}), metadata=bearer(t["tracker"]))
    assert (await _code(profiles.GetProfile(pb.GetProfileRequest(user_id="u-audit"))))[0] == \
        grpc.StatusCode.UNAUTHENTICATED
    assert (await _code(profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="u-audit"),
                                               metadata=bearer(t["decider"]))))[0] == \
        grpc.StatusCode.PERMISSION_DENIED
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="u-audit"),
                                 metadata=bearer(t["admin"], ("x-request-id", "r-7")))
    audit = apb_grpc.AuditServiceStub(chan)
    assert (await _code(audit.TailAudit(apb.TailAuditRequest(limit=10),
                                        metadata=bearer(t["admin"]))))[0] == \
        grpc.StatusCode.PERMISSION_DENIED  # the audit log is the auditor's
    lines = (await audit.TailAudit(apb.TailAuditRequest(limit=10),
                                   metadata=bearer(t["auditor"]))).lines
    rows = [json.loads(line) for line in lines]
    seen = [(r["principal"], r["method"].rsplit("/", 1)[-1], r["status"]) for r in rows]
    expected = [("unauthenticated", "GetProfile", "UNAUTHENTICATED"),
                ("decider", "DeleteProfile", "PERMISSION_DENIED"), ("admin", "DeleteProfile", "OK")]
    at = [seen.index(e) for e in expected]
    assert at == sorted(at), seen  # in the order they happened
    deleted = rows[at[2]]
    assert deleted["request_id"] == "r-7" and deleted["target"].startswith("u:")
    assert "u-audit" not in "\n".join(lines)  # user ids only as keyed hashes
    await secured.stop(grace=0.5)  # flush nothing pending; verify the files as written
    from tests.conftest import run_module
    out = run_module("server", "audit", "verify", "--data-dir", str(secured.settings.data_dir),
                     "--secrets-dir", str(secured.settings.secrets_dir))
    assert json.loads(out.stdout)["ok"] is True


async def test_sends_retries_and_previews_are_audited_with_their_status(settings, auth):
    from protos.tailor.v1 import messaging_pb2 as mspb
    from protos.tailor.v1 import messaging_pb2_grpc as mspb_grpc
    async with audited(settings, auth) as (ch, audit):
        messaging, admin = mspb_grpc.MessagingServiceStub(ch), bearer(auth[1]["admin"])
        await _code(messaging.SendCampaign(mspb.SendCampaignRequest(
            campaign_id="nope", user_ids=["u1"]), metadata=admin))
        await _code(messaging.RetryDeadLetter(mspb.RetryDeadLetterRequest(id="nope"),
                                              metadata=admin))
        await _code(messaging.PreviewMessage(mspb.PreviewMessageRequest(
            campaign_id="nope", user_id="u1"), metadata=admin))
    assert [row[:2] + row[3:4] for row in audit.rows] == [
        ("admin", "SendCampaign", "NOT_FOUND"), ("admin", "RetryDeadLetter", "NOT_FOUND"),
        ("admin", "PreviewMessage", "NOT_FOUND")]


async def test_an_audited_stream_the_client_gave_up_on_is_audited_cancelled(settings, auth):
    """Its final status, as the metrics and access log give it: the line said UNKNOWN, which
    reads as a server fault, not as an export that stopped part-way."""
    async with audited(settings, auth) as (ch, audit):
        profiles, t = pb_grpc.ProfileServiceStub(ch), auth[1]
        now = time.time()
        for batch in range(4):  # ~600 KB of events: more than the stream's flow-control window
            await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
                event_id=f"e{batch}-{i}", user_id=f"u{i % 50}", item_id="1", type="click",
                timestamp=now - i, attributes={"note": "x" * 200}) for i in range(700)]),
                metadata=bearer(t["tracker"]))
        call = profiles.ExportEvents(pb.ExportEventsRequest(), metadata=bearer(t["reader"]))
        await call.read()
        call.cancel()
        deadline = time.time() + 10
        while not audit.rows and time.time() < deadline:
            await asyncio.sleep(0.05)
    assert [row[:2] + row[3:4] for row in audit.rows] == [("reader", "ExportEvents", "CANCELLED")]


def _events(prefix: str, n: int) -> pb.TrackEventsRequest:
    now = time.time()
    return pb.TrackEventsRequest(events=[pb.Event(event_id=f"{prefix}{i}", user_id="u1", item_id="1",
                                                  type="view", timestamp=now - i) for i in range(n)])


async def _stream_cut_after_first_batch(chan, metadata, cut) -> grpc.RpcError:
    """A TrackEventStream that sends a batch, waits for `cut()` (which takes the caller's right
    away), then sends another: the error the stream ends with."""
    profiles, sent = pb_grpc.ProfileServiceStub(chan), asyncio.Event()

    async def batches():
        yield _events("a", 3)
        await sent.wait()
        yield _events("b", 3)

    call = profiles.TrackEventStream(batches(), metadata=metadata)
    deadline = time.time() + 10
    while True:  # the first batch is in once u1's profile holds it
        try:
            held = await profiles.GetProfile(pb.GetProfileRequest(user_id="u1"), metadata=metadata)
        except grpc.RpcError:
            held = None
        if held is not None and len(held.events) == 3:
            break
        assert time.time() < deadline, "the stream's first batch was not stored"
        await asyncio.sleep(0.05)
    await cut()
    sent.set()
    with pytest.raises(grpc.RpcError) as err:
        await call
    return err.value


async def test_a_revoked_token_ends_the_streams_it_opened(secured, chan, auth):
    """Revocation reaches open streams, not only new calls; what the stream stored before stays."""
    path, t = auth
    holder = "writer"
    token = tokens.mint(path, holder, ["tracker", "analyst"])
    assert secured.auth.reload_auth()

    async def revoke():
        assert tokens.revoke(path, holder) and secured.auth.reload_auth()

    err = await _stream_cut_after_first_batch(chan, bearer(token), revoke)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert "no longer valid" in err.details() and "unknown bearer token" in err.details()
    held = await pb_grpc.ProfileServiceStub(chan).GetProfile(pb.GetProfileRequest(user_id="u1"),
                                                             metadata=bearer(t["reader"]))
    assert sorted(e.event_id for e in held.events) == ["a0", "a1", "a2"]


async def test_a_revoked_token_ends_the_silent_streams_it_opened_at_the_reload(secured, chan, auth):
    """A stream was checked again only at its next message: a revoked decider's PlanCampaign
    streams that sent nothing held every plan place of the worker (8 by default) until the
    connection's age ended them (377 s measured), the next plan RESOURCE_EXHAUSTED meanwhile;
    a silent TrackEventStream likewise stayed open. They end at the reload now."""
    path, t = auth
    token = tokens.mint(path, "leaky", ["decider", "tracker"])
    assert secured.auth.reload_auth()
    campaigns = cpb_grpc.CampaignServiceStub(chan)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="c-silent", variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])),
        metadata=bearer(t["admin"]))
    never = asyncio.Event()

    async def silent():
        await never.wait()
        yield cpb.PlanCampaignRequest()

    plans = [campaigns.PlanCampaign(silent(), metadata=bearer(token)) for _ in range(8)]
    track = pb_grpc.ProfileServiceStub(chan).TrackEventStream(silent(), metadata=bearer(token))
    one = cpb.PlanCampaignRequest(campaign_id="c-silent", user_ids=["u-plan"])
    deadline = time.time() + 10
    while True:  # the 8 streams reach the server and take the places
        code, _ = await _code(_drained(campaigns.PlanCampaign(iter([one]), metadata=bearer(
            t["decider"]))))
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            break
        assert time.time() < deadline, "the silent plans did not take the places"
        await asyncio.sleep(0.05)
    assert tokens.revoke(path, "leaky") and secured.auth.reload_auth()
    ends = await asyncio.wait_for(asyncio.gather(*(_code(_drained(p)) for p in plans),
                                                 _code(track)), timeout=3)
    assert {code for code, _ in ends} == {grpc.StatusCode.UNAUTHENTICATED}, ends
    assert all("no longer valid" in details for _, details in ends), ends
    answers = await _drained(campaigns.PlanCampaign(iter([one]), metadata=bearer(t["decider"])))
    assert [d.user_id for a in answers for d in a.decisions] == ["u-plan"]  # the places came back
    never.set()


async def test_a_role_taken_away_ends_the_streams_it_opened(secured, chan, auth):
    path, _ = auth
    token = tokens.mint(path, "writer", ["tracker", "analyst"])
    assert secured.auth.reload_auth()

    async def demote():
        import tomllib
        doc = tomllib.loads(path.read_text())
        doc["principals"]["writer"]["roles"] = ["analyst"]
        path.write_text(tokens.dumps(doc))
        assert secured.auth.reload_auth()

    err = await _stream_cut_after_first_batch(chan, bearer(token), demote)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
    assert "writer lacks the role" in err.details() and "TrackEventStream" in err.details()


async def test_pii_reader_taken_away_ends_the_unmasked_export_it_opened(secured, chan, auth):
    """An export decides at its start whether it masks; a principal demoted from analyst and
    pii-reader to analyst still may call it, so the recheck let the open stream go on and it
    kept sending unmasked emails to the demoted caller (all 3,000 of them, to the end)."""
    path, t = auth
    token = tokens.mint(path, "exporter", ["analyst", "pii-reader"])
    assert secured.auth.reload_auth()
    profiles, now = pb_grpc.ProfileServiceStub(chan), time.time()
    for batch in range(3):
        await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
            event_id=f"x{batch}-{i}", user_id=f"buyer{i}", item_id="1", type="view",
            timestamp=now - 60, attributes={"email": f"buyer{i}@example.com", "pad": "p" * 200})
            for i in range(1000)]), metadata=bearer(t["tracker"]))
    export = profiles.ExportEvents(pb.ExportEventsRequest(start=0, end=now + 60),
                                   metadata=bearer(token))
    first = await export.read()
    assert first.attributes["email"].startswith("buyer") and "***" not in first.attributes["email"]
    import tomllib
    doc = tomllib.loads(path.read_text())
    doc["principals"]["exporter"]["roles"] = ["analyst"]
    path.write_text(tokens.dumps(doc))
    assert secured.auth.reload_auth()
    with pytest.raises(grpc.RpcError) as err:
        while await export.read() is not grpc.aio.EOF:
            pass
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    assert "exporter lacks the role pii-reader" in err.value.details()


async def test_a_stream_ends_when_its_jwt_expires(secured, chan, jwt_keys, monkeypatch):
    from server.security import interceptor
    monkeypatch.setattr(interceptor, "RECHECK_SECONDS", 0.2)
    token = _jwt(jwt_keys, roles=["tracker", "analyst"], exp=time.time() + 4)

    async def expire():
        await asyncio.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"]
                                - time.time()) + 0.5)

    err = await _stream_cut_after_first_batch(chan, bearer(token), expire)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "token expired" in err.details()


async def test_a_silent_stream_ends_when_its_jwt_expires(secured, chan, jwt_keys, monkeypatch):
    """No reload, no message: the stream's caller is still checked every RECHECK_SECONDS."""
    from server.security import interceptor
    monkeypatch.setattr(interceptor, "RECHECK_SECONDS", 0.2)
    token = _jwt(jwt_keys, roles=["tracker"], exp=time.time() + 2)
    never = asyncio.Event()

    async def silent():
        await never.wait()
        yield pb.TrackEventsRequest()

    call = pb_grpc.ProfileServiceStub(chan).TrackEventStream(silent(), metadata=bearer(token))
    code, details = await asyncio.wait_for(_code(call), timeout=10)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "token expired" in details, details
    never.set()


async def test_an_address_whose_jwts_keep_failing_is_refused_without_a_check(settings, auth, jwt_keys):
    """Each failed JWT costs a signature check on the event loop; past `Limits.jwt_failures` in
    an interval the address's unknown JWTs are refused unchecked, saying why. Tokens of the auth
    config, and JWTs verified before, still pass."""
    from server.app import TailorServer
    limits = settings.limits.model_copy(update={"jwt_failures": 3, "jwt_failure_seconds": 600.0})
    server = TailorServer(settings.model_copy(update={"auth_config": auth[0], "limits": limits}))
    await server.start()
    forged = jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60,
                         "roles": ["analyst"]}, ec.generate_private_key(ec.SECP256R1()),
                        algorithm="ES256")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub, req = cpb_grpc.CampaignServiceStub(ch), cpb.ListCampaignsRequest()
            known = _jwt(jwt_keys, roles="analyst", sub="known")
            await stub.ListCampaigns(req, metadata=bearer(known))
            for _ in range(3):
                assert await _code(stub.ListCampaigns(req, metadata=bearer(forged))) == (
                    grpc.StatusCode.UNAUTHENTICATED, "invalid token (bad signature)")
            refused = ("too many invalid tokens from this address (the last: invalid token (bad "
                       "signature)); new ones are not checked for up to 600 s")
            assert await _code(stub.ListCampaigns(req, metadata=bearer(forged))) == (
                grpc.StatusCode.UNAUTHENTICATED, refused)
            fresh = _jwt(jwt_keys, roles="analyst", sub="fresh")  # valid, but never checked
            assert await _code(stub.ListCampaigns(req, metadata=bearer(fresh))) == (
                grpc.StatusCode.UNAUTHENTICATED, refused)
            await stub.ListCampaigns(req, metadata=bearer(known))
            await stub.ListCampaigns(req, metadata=bearer(auth[1]["analyst"]))
            assert server.auth.reload_auth()  # the count outlives a reload
            assert await _code(stub.ListCampaigns(req, metadata=bearer(forged))) == (
                grpc.StatusCode.UNAUTHENTICATED, refused)
    finally:
        await server.stop(grace=0.5)


async def test_who_listed_or_lifted_an_address_can_be_found_in_the_audit_log(secured, chan, auth):
    """A suppression call's audit line names its address by a keyed hash of the address as the
    list normalizes it (any spelling of one address gives one target), never the address;
    `server audit ref` gives that target, and a user's, to search the log with. Each is
    labelled by what it is: `a:` an address, `c:` a campaign, `u:` a user (every target was
    `u:`, so an address or a campaign read as a user). UpdateCampaign's campaign id is in its
    spec: its line had no target, and who changed a campaign could not be found."""
    from tests.conftest import run_module
    t, profiles = auth[1], pb_grpc.ProfileServiceStub(chan)
    await _code(cpb_grpc.CampaignServiceStub(chan).ArchiveCampaign(
        cpb.ArchiveCampaignRequest(campaign_id="c-ref"), metadata=bearer(t["admin"])))
    await _code(cpb_grpc.CampaignServiceStub(chan).UpdateCampaign(  # its id is in its spec
        cpb.UpdateCampaignRequest(spec=cpb.CampaignSpec(campaign_id="c-ref")),
        metadata=bearer(t["admin"])))
    await profiles.AddSuppression(pb.AddSuppressionRequest(
        address=pb.SuppressionAddress(email="Lifted@Example.org")), metadata=bearer(t["tracker"]))
    await profiles.RemoveSuppression(pb.SuppressionAddress(email=" <lifted@example.org>"),
                                     metadata=bearer(t["admin"]))
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="u-ref"), metadata=bearer(t["admin"]))
    lines = (await apb_grpc.AuditServiceStub(chan).TailAudit(apb.TailAuditRequest(limit=13),
                                                              metadata=bearer(t["auditor"]))).lines
    assert "lifted" not in "\n".join(lines).lower()
    targets = {json.loads(line)["method"].rsplit("/", 1)[-1]: json.loads(line)["target"]
               for line in lines}
    secrets = ("--secrets-dir", str(secured.settings.secrets_dir))

    def ref(*flag):
        return run_module("server", "audit", "ref", *flag, *secrets).stdout.strip()

    address = ref("--email", "mailto:LIFTED@example.org")
    assert targets["AddSuppression"] == targets["RemoveSuppression"] == address
    assert address.startswith("a:") and address != ref("--phone", "+44 7700 900123")
    assert targets["DeleteProfile"] == ref("--user-id", "u-ref") != address
    assert targets["DeleteProfile"].startswith("u:")
    assert targets["ArchiveCampaign"] == ref("--campaign-id", "c-ref")
    assert targets["ArchiveCampaign"].startswith("c:")
    assert targets["UpdateCampaign"] == targets["ArchiveCampaign"]
    await profiles.AddSuppression(pb.AddSuppressionRequest(  # a push token's: case-sensitive
        address=pb.SuppressionAddress(push_token="APA91b:Ref")), metadata=bearer(t["tracker"]))
    tail = (await apb_grpc.AuditServiceStub(chan).TailAudit(apb.TailAuditRequest(limit=3),
                                                             metadata=bearer(t["auditor"]))).lines
    [token] = [json.loads(line)["target"] for line in tail if "AddSuppression" in line]
    assert token == ref("--push-token", " APA91b:Ref\n") != ref("--push-token", "apa91b:ref")
    wrong = run_module("server", "audit", "ref", "--email", "nobody", *secrets, check=False)
    assert wrong.returncode == 1 and "not an address of kind email" in wrong.stderr
    run_module("server", "secrets", "rotate", "user-id", *secrets)  # older lines: an older key
    assert ref("--user-id", "u-ref").splitlines()[1:] == [targets["DeleteProfile"]]
    empty = run_module("server", "audit", "ref", "--user-id", "", *secrets, check=False)
    assert empty.returncode == 1 and "an empty id" in empty.stderr


async def test_expired_jwts_cost_no_signature_check_and_charge_no_address(settings, auth, jwt_keys):
    """A client reconnecting with a stale token (each of its streams re-checked after expiry
    too) is not an attacker: refused as expired before the signature check, never charged, so
    its fresh token still passes past `Limits.jwt_failures` expired ones."""
    from server.app import TailorServer
    limits = settings.limits.model_copy(update={"jwt_failures": 3, "jwt_failure_seconds": 600.0})
    server = TailorServer(settings.model_copy(update={"auth_config": auth[0], "limits": limits}))
    await server.start()
    stale = _jwt(jwt_keys, roles="analyst", exp=time.time() - 60)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub, req = cpb_grpc.CampaignServiceStub(ch), cpb.ListCampaignsRequest()
            for _ in range(6):
                assert await _code(stub.ListCampaigns(req, metadata=bearer(stale))) == (
                    grpc.StatusCode.UNAUTHENTICATED, "token expired")
            await stub.ListCampaigns(req, metadata=bearer(_jwt(jwt_keys, roles="analyst")))
    finally:
        await server.stop(grace=0.5)
