"""The client, its CLI, `training push/export` and the Locust user connect with --tls-ca, --cert,
--key and --token (in plaintext only to loopback, unless --insecure): a recording gRPC server
shows the token header, a `python -m server` with mutual TLS takes the CLIs."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest

from clients import TailorClient, TailorError
from clients.aio import AsyncTailorClient
from clients.transport import Connection
from loadtests.certs import CertificateAuthority
from loadtests.loadgen import PING, _drive, ping_payloads, run_load
from protos.tailor.v1 import diagnostics_pb2 as pb
from protos.tailor.v1 import diagnostics_pb2_grpc as pb_grpc
from tests.conftest import ROOT, free_port, run_module


class _RecordingDiagnostics(pb_grpc.DiagnosticsServiceServicer):
    def __init__(self):
        self.authorization: list[str] = []

    def Ping(self, request, context):
        self.authorization.append(dict(context.invocation_metadata()).get("authorization"))
        return pb.PingResponse()


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    return ca, ca.issue("server"), ca.issue("client", client=True)


@pytest.fixture(params=["plaintext", "tls", "mtls"])
def recording(request, pki):
    """A real gRPC server recording the authorization header of every Ping; yields the servicer
    and the TailorClient keyword arguments that reach it."""
    ca, server_cert, client_cert = pki
    servicer = _RecordingDiagnostics()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_DiagnosticsServiceServicer_to_server(servicer, server)
    kw = {}
    if request.param == "plaintext":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        mtls = request.param == "mtls"
        creds = grpc.ssl_server_credentials(
            [(server_cert.key.read_bytes(), server_cert.cert.read_bytes())],
            root_certificates=ca.cert.read_bytes() if mtls else None, require_client_auth=mtls)
        port = server.add_secure_port("127.0.0.1:0", creds)
        kw = dict(tls_ca=ca.cert, **(dict(cert=client_cert.cert, key=client_cert.key) if mtls else {}))
    server.start()
    yield servicer, f"127.0.0.1:{port}", kw
    server.stop(None)


def test_the_token_goes_as_a_bearer_header_on_every_call(recording):
    servicer, target, kw = recording
    with TailorClient(target, token="s3cret", **kw) as client:
        client.ping()
        client.ping()
    with TailorClient(target, **kw) as client:
        client.ping()
    assert servicer.authorization == ["Bearer s3cret", "Bearer s3cret", None]


def off_loopback(host: str) -> str:
    """The refusal of a token in plaintext to `host`."""
    return (f"--token: not sent in plaintext to {host}, which is not a loopback address (whoever "
            "answers there, or listens on the way, would read it): give --tls-ca to use TLS, or "
            "--insecure to send it anyway")


@pytest.mark.parametrize("target, host", [
    ("192.0.2.1:50051", "192.0.2.1"), ("tailor.example:50051", "tailor.example"),
    ("[2001:db8::1]:50051", "2001:db8::1"), ("0.0.0.0:50051", "0.0.0.0"),
    ("dns:///tailor.example:443", "tailor.example"), ("ipv4:127.0.0.1:1,192.0.2.1:1", "192.0.2.1"),
    ("dns://192.0.2.53/localhost:50051", "localhost")])  # that DNS server may answer anything
def test_a_token_is_not_sent_in_plaintext_off_loopback(target, host):
    """Without --tls-ca a token went as a plaintext header to any host (a typo, a forgotten
    --tls-ca, a name that resolves elsewhere), to be read by whatever answered there: both
    clients now refuse before any connection."""
    for client in (TailorClient, AsyncTailorClient):
        with pytest.raises(ValueError) as err:
            client(target, token="t")
        assert str(err.value) == off_loopback(host)


@pytest.mark.parametrize("target", ["127.0.0.2:1", "localhost:1", "[::1]:1", "unix:/tmp/t.sock",
                                    "unix-abstract:t", "dns:///localhost:1", "ipv6:[::1]:1"])
def test_a_token_still_goes_in_plaintext_to_loopback_or_a_unix_socket(target):
    Connection(token="t").channel(target).close()


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "127.0.0.1", "127.8.9.1", "::1",
                                  "0.0.0.0", "::", "192.0.2.1", "tailor.example"])
def test_the_client_reads_a_host_as_loopback_as_the_server_does(host):
    """One rule, `contract.hosts.is_loopback`: the client had a copy of the server's, and they
    had drifted: `LocalHost` was loopback to the client (a token went in plaintext) and not to
    the server (it refused to serve there without TLS or --insecure)."""
    from server.security.hosts import is_loopback
    try:
        Connection(token="t").channel(f"[{host}]:1" if ":" in host else f"{host}:1").close()
        sent = True
    except ValueError:
        sent = False
    assert sent == is_loopback(host)


def test_tls_insecure_or_no_token_may_go_off_loopback():
    for connection in (Connection(token="t", tls=True), Connection(token="t", insecure=True),
                       Connection()):
        connection.channel("192.0.2.1:50051").close()


@pytest.mark.parametrize("recording", ["plaintext"], indirect=True)
def test_insecure_sends_the_token_in_plaintext_off_loopback(recording):
    """0.0.0.0 is not loopback (as the server's --host rule has it), yet Linux dials this
    machine there: the recording server, on 127.0.0.1, stands for one elsewhere."""
    servicer, target, _ = recording
    elsewhere = target.replace("127.0.0.1", "0.0.0.0")
    refused = run_module("clients", "ping", "--server", elsewhere, "--token", "s3cret",
                         check=False)
    assert (refused.returncode, refused.stderr) == (2, f"error: {off_loopback('0.0.0.0')}\n")
    with TailorClient(elsewhere, token="s3cret", insecure=True) as client:
        client.ping()
    run_module("clients", "ping", "--server", elsewhere, "--token", "s3cret", "--insecure")
    assert servicer.authorization == ["Bearer s3cret", "Bearer s3cret"]


def test_training_refuses_a_token_in_plaintext_off_loopback(tmp_path):
    """push, export and retrain build their client from the same flags (--insecure too)."""
    env = {**os.environ, "TAILOR_TOKEN": "t0ken"}
    elsewhere = f"0.0.0.0:{free_port()}"  # nothing listens: a client let through fails fast
    for command in (["push", str(tmp_path)], ["export", "--out", str(tmp_path / "i.csv")],
                    ["retrain", "--work-dir", str(tmp_path / "w")]):
        out = run_module("training", *command, "--server", elsewhere, check=False, env=env)
        assert (out.returncode, out.stderr) == (2, f"error: {off_loopback('0.0.0.0')}\n"), command
    out = run_module("training", "push", str(tmp_path), "--server", elsewhere, "--insecure",
                     check=False, env=env)  # past the client, to the bundle it reads
    assert out.returncode == 2 and "has no manifest.json" in out.stderr, out.stderr


def test_a_client_certificate_needs_its_key(pki):
    _, _, me = pki
    with pytest.raises(ValueError, match="--cert and --key"):
        TailorClient("127.0.0.1:1", cert=me.cert)


@pytest.fixture(scope="module")
def mtls_server(module_server_process, demo_bundle, tmp_path_factory):
    """(target, the CLI's TLS flags, its pki) of a `python -m server` with mutual TLS, shared
    by the module's tests (calls and a staged push: none reads what another changed)."""
    ca = CertificateAuthority(tmp_path_factory.mktemp("mtls-pki"))
    pki = ca, ca.issue("server"), ca.issue("client", client=True)
    _, server_cert, me = pki
    mine = Connection(tls_ca=ca.cert, cert=me.cert, key=me.key)
    server = module_server_process(bundle=demo_bundle, connection=mine,
                                   args=("--tls-cert", str(server_cert.cert), "--tls-key",
                                         str(server_cert.key), "--tls-client-ca", str(ca.cert)))
    flags = ["--tls-ca", str(ca.cert), "--cert", str(me.cert), "--key", str(me.key)]
    return server.target, flags, pki


def test_the_cli_connects_with_tls_flags_and_a_token(mtls_server):
    target, flags, _ = mtls_server
    out = run_module("clients", "recommend", "--server", target, "--user", "3", "-k", "2", *flags,
                     "--token", "t0ken")
    assert len(json.loads(out.stdout)["items"]) == 2
    refused = run_module("clients", "ping", "--server", target, "--timeout", "2", *flags[:2], check=False)
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr


def test_training_export_and_push_connect_with_tls_flags(mtls_server, tmp_path, second_bundle):
    target, flags, _ = mtls_server
    env = {**os.environ, "TAILOR_TOKEN": "t0ken"}
    out = run_module("training", "export", "--server", target, "--out", str(tmp_path / "i.csv"), *flags,
                     env=env)
    assert "interactions" in out.stdout and (tmp_path / "i.csv").exists()
    out = run_module("training", "push", str(second_bundle), "--server", target, "--stage-only", *flags,
                     env=env)
    assert json.loads((second_bundle / "manifest.json").read_text())["version"] in out.stdout
    refused = run_module("training", "push", str(second_bundle), "--server", target, "--timeout", "5",
                         check=False, env=env)
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr


@pytest.mark.slow
def test_locust_users_connect_with_tls_flags(mtls_server):
    target, flags, _ = mtls_server
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless", "-u", "2", "-r", "2",
         "-t", "3s", "--host", target, "--user-count", "1500", "--only-summary", *flags, "--token", "t"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "tailor.v1.RecommendationService/Recommend" in run.stdout + run.stderr


def test_the_client_reports_a_refused_handshake(mtls_server):
    target, _, (ca, _, _) = mtls_server
    with TailorClient(target, timeout=2, tls_ca=ca.cert) as client, pytest.raises(TailorError) as err:
        client.ping()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_the_cli_says_which_tls_flag_a_refused_connection_lacks(mtls_server, tmp_path):
    """A plaintext call, or one without a client certificate, to a mutual-TLS server read
    only 'Socket closed'; a CA that did not sign the server's certificate,
    'CERTIFICATE_VERIFY_FAILED' (or 'BAD_SIGNATURE' for a CA of the same name)."""
    target, flags, _ = mtls_server
    other = CertificateAuthority(tmp_path / "other", name="another-ca")
    namesake = CertificateAuthority(tmp_path / "namesake")  # the server's CA's name, not its key
    cases = {(): "if it serves TLS, give --tls-ca (the CA of its certificate), and --cert and "
                 "--key if it asks for a client certificate)",
             tuple(flags[:2]): "if it asks for a client certificate (mutual TLS), give --cert "
                               "and --key)",
             **{("--tls-ca", str(ca.cert)): f"--tls-ca {ca.cert} is not the CA that signed the "
                                            "server's certificate)" for ca in (other, namesake)}}
    for given, hint in cases.items():
        out = run_module("clients", "ping", "--server", target, "--timeout", "2", *given,
                         check=False)
        assert out.returncode == 1 and out.stderr.strip().endswith(hint), out.stderr


def test_a_ca_in_openssl_trusted_form_is_still_taken(mtls_server, tmp_path):
    """`openssl x509 -trustout` (and Fedora's *.trust.crt bundles) label a CA `BEGIN TRUSTED
    CERTIFICATE`, and old tools `BEGIN X509 CERTIFICATE`, which gRPC reads as a root; the kind
    check refused them as no certificate."""
    target, flags, (ca, _, _) = mtls_server
    for label in (b"TRUSTED CERTIFICATE-----", b"X509 CERTIFICATE-----"):
        relabelled = tmp_path / "ca.trust.pem"
        relabelled.write_bytes(ca.cert.read_bytes().replace(b"CERTIFICATE-----", label))
        out = run_module("clients", "ping", "--server", target, "--timeout", "5",
                         "--tls-ca", str(relabelled), *flags[2:], check=False)
        assert out.returncode == 0, (label, out.stderr)


def test_a_client_certificate_without_tls_ca_is_told_to_give_it(mtls_server):
    """--cert and --key alone check the server against the system's CAs: the hint named
    `--tls-ca None` as the CA that did not sign the server's certificate."""
    target, flags, _ = mtls_server
    out = run_module("clients", "ping", "--server", target, "--timeout", "2", *flags[2:],
                     check=False)
    assert out.returncode == 1 and "--tls-ca None" not in out.stderr, out.stderr
    assert out.stderr.strip().endswith("no --tls-ca: the server's certificate was checked against "
                                       "the system's CAs; give --tls-ca, the CA that signed it)")


def test_the_load_generator_drives_a_tls_server_with_a_token(mtls_server):
    target, _, (ca, _, me) = mtls_server
    mine = Connection(tls_ca=ca.cert, cert=me.cert, key=me.key, token="t")
    result = run_load(target, PING, ping_payloads(), concurrency=2, duration=1, connection=mine)
    assert result.calls > 0 and result.errors == 0
    refused = Connection(tls_ca=ca.cert)
    with pytest.raises(grpc.aio.AioRpcError):  # the warm-up call fails the handshake
        asyncio.run(_drive(target, PING, ping_payloads(), 1, 1, 0, 1, refused))


def test_a_token_read_with_its_newline_still_goes_as_the_token(recording):
    """A token read from a file or a mounted secret ends with a newline; a header cannot hold
    one (gRPC failed the call with INTERNAL: Invalid metadata, before it left the client)."""
    servicer, target, kw = recording
    with TailorClient(target, token=" s3cret\n", **kw) as client:
        client.ping()
    assert servicer.authorization == ["Bearer s3cret"]


@pytest.mark.parametrize("token", ["two words", "t\x00ken", "tökén", "\n"])
def test_a_token_no_header_can_hold_is_refused_naming_the_flag(token):
    with pytest.raises(ValueError, match="^--token: "):
        TailorClient("127.0.0.1:1", token=token)


SYSTEM_ROOTS_PING = """
import asyncio, sys
from clients import TailorClient
from clients.aio import AsyncTailorClient

target = sys.argv[1]
with TailorClient(target, tls=True, token="t") as client:
    client.ping()

async def main():
    async with AsyncTailorClient(target, tls=True, token="t") as client:
        await client.ping()
asyncio.run(main())
print("both")
"""


def test_both_clients_do_tls_with_the_system_roots(recording, pki):
    """`tls=True` without a CA file: the machine's roots (here gRPC's roots file, set to the
    test CA). The asyncio twin had no `tls` at all: a server with a public certificate needed
    the system bundle's path as `tls_ca`."""
    servicer, target, kw = recording
    if "tls_ca" not in kw:
        pytest.skip("a TLS server only")
    env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(kw["tls_ca"]), "PYTHONPATH": str(ROOT)}
    if "cert" in kw:
        pytest.skip("no client certificate with system roots alone")
    out = subprocess.run([sys.executable, "-c", SYSTEM_ROOTS_PING, target], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "both", out.stderr[-2000:]
    assert servicer.authorization == ["Bearer t", "Bearer t"]


def test_an_asyncio_channel_sends_the_token_on_streaming_calls_over_plaintext(server_process,
                                                                               tmp_path):
    """Over plaintext (loopback) the token goes by an interceptor; the asyncio one was for
    unary calls only, so TrackEventStream and ExportEvents went without it: UNAUTHENTICATED
    'no credentials' where TrackEvents on the same channel was accepted."""
    from server.security import tokens
    auth = tmp_path / "auth.toml"
    token = tokens.mint(auth, "loader", ["tracker", "analyst"])
    server = server_process(connection=Connection(token=token),
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")},
                            args=("--auth-config", str(auth)))
    from protos.tailor.v1 import profile_pb2, profile_pb2_grpc

    async def calls():
        channel = Connection(token=token).aio_channel(server.target)
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        event = profile_pb2.Event(event_id="e1", user_id="u1", type="view", item_id="i1",
                                  timestamp=time.time() - 60)

        async def batches():
            yield profile_pb2.TrackEventsRequest(events=[event])
        try:
            tracked = await stub.TrackEventStream(batches(), timeout=30)
            exported = [e.event_id async for e in stub.ExportEvents(
                profile_pb2.ExportEventsRequest(), timeout=30)]
        finally:
            await channel.close()
        return tracked.accepted, exported
    assert asyncio.run(calls()) == (1, ["e1"])


def test_a_passphrase_protected_key_in_the_traditional_form_is_refused(tmp_path):
    """`openssl genrsa -traditional -aes128` writes `BEGIN RSA PRIVATE KEY` with a
    `Proc-Type: 4,ENCRYPTED` header: the check refused only PKCS#8's `BEGIN ENCRYPTED PRIVATE
    KEY`, and let through a key gRPC cannot use (its credentials take no passphrase)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    me = CertificateAuthority(tmp_path / "ca").issue("client", client=True)
    key = tmp_path / "client.key"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret")))
    assert b"ENCRYPTED" in key.read_bytes()
    with pytest.raises(ValueError, match=f"--key {key}: the key is encrypted"):
        Connection(cert=me.cert, key=key).credentials()
