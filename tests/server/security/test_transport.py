"""TLS, mutual TLS, certificate rotation on SIGHUP and the secure-by-default rule, against
`python -m server` processes with certificates made in the test."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from clients import TailorClient, TailorError
from clients.transport import Connection
from loadtests.certs import CertificateAuthority
from protos.tailor.v1.diagnostics_pb2 import PingRequest
from protos.tailor.v1.diagnostics_pb2_grpc import DiagnosticsServiceStub
from server.app import TailorServer
from server.config import Settings
from server.security.errors import ServeRefused
from server.security.hosts import is_loopback
from server.security.transport import CLOCK_SKEW, ServerTls, check_exposure, metrics_context
from tests.conftest import free_port, run_module

FRESH = [("grpc.use_local_subchannel_pool", 1)]  # a new connection (handshake) per channel


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority(tmp_path / "ca")


def _ping(target: str, connection: Connection) -> None:
    """One Ping on a new connection; raises TailorError(UNAVAILABLE) when the handshake fails."""
    client = TailorClient(target, timeout=3, tls_ca=connection.tls_ca, cert=connection.cert,
                          key=connection.key, token=connection.token)
    with client:
        client.ping()


def test_plaintext_client_is_refused_by_a_tls_server(server_process, ca, demo_bundle):
    issued = ca.issue("server")
    tls = Connection(tls_ca=ca.cert, token="t0ken")
    server = server_process(bundle=demo_bundle, connection=tls,
                            args=("--tls-cert", str(issued.cert), "--tls-key", str(issued.key)))
    _ping(server.target, tls)
    with pytest.raises(TailorError) as err:
        _ping(server.target, Connection())
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert b"grpc_server_handled_total" in _fetch_metrics(server.metrics_port, ca.cert)  # HTTPS, same cert
    with pytest.raises(OSError):  # plain HTTP: the TLS listener resets it
        urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
    assert b"grpc_server_handled_total" in _fetch_metrics(server.metrics_port, ca.cert)  # still up


@pytest.mark.parametrize("form", ["CERTIFICATE", "TRUSTED CERTIFICATE"])
def test_mutual_tls_refuses_clients_without_a_certificate_of_its_ca(server_process, ca, demo_bundle,
                                                                   tmp_path, form):
    """The client CA file as PEM certificates, or in OpenSSL's trusted form (which gRPC reads
    too; a check of the file had refused it at start)."""
    issued, me = ca.issue("server"), ca.issue("client", client=True)
    stranger = CertificateAuthority(tmp_path / "other", "other-ca").issue("client", client=True)
    mine = Connection(tls_ca=ca.cert, cert=me.cert, key=me.key)
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_text(ca.cert.read_text().replace("CERTIFICATE-----", f"{form}-----"))
    server = server_process(bundle=demo_bundle, connection=mine, args=(
        "--tls-cert", str(issued.cert), "--tls-key", str(issued.key), "--tls-client-ca", str(client_ca)))
    _ping(server.target, mine)
    for refused in (Connection(tls_ca=ca.cert), Connection(tls_ca=ca.cert, cert=stranger.cert,
                                                           key=stranger.key)):
        with pytest.raises(TailorError) as err:
            _ping(server.target, refused)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


async def _aping(target: str, ca_cert) -> None:
    async with Connection(tls_ca=ca_cert).aio_channel(target, FRESH) as ch:
        await DiagnosticsServiceStub(ch).Ping(PingRequest(), timeout=3)


def _two_cas(tmp_path: Path):
    """Two CAs and a server certificate from each: (ca_a, ca_b, a, b)."""
    ca_a, ca_b = CertificateAuthority(tmp_path / "a", "ca-a"), CertificateAuthority(tmp_path / "b", "ca-b")
    return ca_a, ca_b, ca_a.issue("server"), ca_b.issue("server")


@contextlib.asynccontextmanager
async def _tls_served(settings, tmp_path: Path, pair):
    """An in-process server on `pair`'s certificate and key, copied to the files it reloads
    from: (server, target, cert file, key file)."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pair.cert, cert)
    shutil.copy(pair.key, key)
    server = TailorServer(settings.model_copy(update=dict(tls_cert=cert, tls_key=key)))
    target = f"127.0.0.1:{await server.start()}"
    try:
        yield server, target, cert, key
    finally:
        await server.stop(grace=0.5)


async def test_a_reload_without_a_matching_pair_keeps_the_old_certificate(settings, tmp_path, caplog):
    ca_a, ca_b, a, b = _two_cas(tmp_path)
    async with _tls_served(settings, tmp_path, a) as (server, target, cert, key):
        shutil.copy(b.cert, cert)  # a rotation caught half-way: B's certificate, A's key
        server.reload()
        await _aping(target, ca_a.cert)
        assert "TLS reload failed, keeping the current certificate" in caplog.text
        shutil.copy(b.key, key)
        server.reload()
        await _aping(target, ca_b.cert)
        with pytest.raises(grpc.aio.AioRpcError):
            await _aping(target, ca_a.cert)


async def test_a_reload_says_at_once_whether_it_took_the_files(settings, tmp_path, caplog):
    """The files were read at the next new connection: after a SIGHUP, a worker no client had
    reached yet logged nothing, right or wrong, so the operator could not tell whether the
    gRPC port took the new certificate."""
    caplog.set_level(logging.INFO, logger="tailor.security.transport")
    _, ca_b, a, b = _two_cas(tmp_path)
    async with _tls_served(settings, tmp_path, a) as (server, target, cert, key):
        shutil.copy(b.cert, cert)  # B's certificate, A's key
        server.reload()  # no connection since
        assert f"TLS reload failed, keeping the current certificate: --tls-key {key}: not the key" \
            in caplog.text
        shutil.copy(b.key, key)
        server.reload()
        assert f"TLS certificate reloaded from {cert}" in caplog.text
        await _aping(target, ca_b.cert)


async def test_a_reload_to_an_expired_certificate_keeps_the_current_one_and_says_why(settings, tmp_path,
                                                                                   caplog):
    """An expired certificate (its key matching) was taken on SIGHUP: every new connection's
    handshake then failed, with nothing logged but 'TLS certificate reloaded'."""
    ca = CertificateAuthority(tmp_path / "ca")
    good, expired = ca.issue("server"), ca.issue("old", shift=-dt.timedelta(days=2))
    async with _tls_served(settings, tmp_path, good) as (server, target, cert, key):
        tls = ServerTls(cert, key)
        metrics = metrics_context(tls)
        shutil.copy(expired.cert, cert)
        shutil.copy(expired.key, key)
        server.reload()
        await _aping(target, ca.cert)  # the current certificate still serves
        assert f"keeping the current certificate: --tls-cert {cert}: the certificate expired on" \
            in caplog.text
        tls.reload_context(metrics)  # the metrics port's reload: the same check
        assert metrics.sni_callback is None
        assert f"TLS reload (HTTP) failed, keeping the current certificate: --tls-cert {cert}: " \
               "the certificate expired on" in caplog.text


def _fetch_metrics(port: int, cafile) -> bytes:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=5) as r:
        return r.read()


def test_sighup_rotates_the_certificate_of_every_worker_and_of_metrics(server_process, demo_bundle,
                                                                      tmp_path):
    ca_a, ca_b, a, b = _two_cas(tmp_path)
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    shutil.copy(a.cert, cert)
    shutil.copy(a.key, key)
    server = server_process(bundle=demo_bundle, workers=2, connection=Connection(tls_ca=ca_a.cert),
                            args=("--tls-cert", str(cert), "--tls-key", str(key)))
    assert b"grpc_server_handled_total" in _fetch_metrics(server.metrics_port, ca_a.cert)
    shutil.copy(b.cert, cert)
    shutil.copy(b.key, key)
    server.proc.send_signal(signal.SIGHUP)
    trust_b = Connection(tls_ca=ca_b.cert)
    deadline = time.time() + 20
    while True:  # the signal reaches the workers asynchronously
        try:
            _ping(server.target, trust_b)
            break
        except TailorError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for _ in range(16):  # new connections land on either worker (SO_REUSEPORT hash): all see B
        _ping(server.target, trust_b)
        with pytest.raises(TailorError):
            _ping(server.target, Connection(tls_ca=ca_a.cert))
    assert b"grpc_server_handled_total" in _fetch_metrics(server.metrics_port, ca_b.cert)
    assert server.proc.poll() is None



def _fetch_metrics_as(port: int, cafile, me) -> bytes:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.load_cert_chain(me.cert, me.key)
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=5) as r:
        return r.read()


def test_sighup_with_a_new_client_ca_stops_the_old_one_on_metrics_too(server_process, demo_bundle,
                                                                      ca, tmp_path):
    """Re-loading the client CA into the metrics endpoint's context only added to its trust
    store: after a CA was taken out of the file (say, its key leaked) and SIGHUP sent, its
    client certificates still read /metrics until a restart (the gRPC port refused them)."""
    issued = ca.issue("server")
    ca_a, ca_b = CertificateAuthority(tmp_path / "a", "ca-a"), CertificateAuthority(tmp_path / "b", "ca-b")
    old, new = ca_a.issue("client", client=True), ca_b.issue("client", client=True)
    client_ca = tmp_path / "client-ca.pem"
    shutil.copy(ca_a.cert, client_ca)
    server = server_process(bundle=demo_bundle, connection=Connection(
        tls_ca=ca.cert, cert=old.cert, key=old.key), args=(
        "--tls-cert", str(issued.cert), "--tls-key", str(issued.key), "--tls-client-ca", str(client_ca)))
    assert b"grpc_server_handled_total" in _fetch_metrics_as(server.metrics_port, ca.cert, old)
    shutil.copy(ca_b.cert, client_ca)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while True:  # the signal is handled asynchronously
        try:
            _fetch_metrics_as(server.metrics_port, ca.cert, new)
            break
        except (OSError, ssl.SSLError):
            assert time.time() < deadline, "the new client CA was not taken up"
            time.sleep(0.2)
    with pytest.raises((OSError, ssl.SSLError)):
        _fetch_metrics_as(server.metrics_port, ca.cert, old)
    with pytest.raises(TailorError):
        _ping(server.target, Connection(tls_ca=ca.cert, cert=old.cert, key=old.key))
    assert server.proc.poll() is None

def test_a_non_loopback_bind_without_tls_and_auth_is_refused_with_one_line(tmp_path, ca):
    issued = ca.issue("server")
    for flags in ((), ("--tls-cert", str(issued.cert), "--tls-key", str(issued.key))):
        out = run_module("server", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir",
                         str(tmp_path / "data"), *flags, check=False, timeout=60)
        assert out.returncode == 2 and out.stdout == ""
        line = out.stderr.strip()
        assert "\n" not in line and line.startswith("error: refusing to serve on 0.0.0.0 without")
        for flag in ("--tls-cert", "--tls-key", "--auth-config", "--insecure"):
            assert flag in line
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_certificate_files_that_do_not_load_stop_the_start_with_one_line(tmp_path, ca):
    a, b = ca.issue("a"), ca.issue("b")
    for cert, key in ((tmp_path / "missing.pem", a.key), (a.cert, b.key)):
        out = run_module("server", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                         "--tls-cert", str(cert), "--tls-key", str(key), check=False, timeout=60)
        line = out.stderr.strip().splitlines()[-1]  # after the start's warning
        assert out.returncode == 2
        assert line.startswith("error: --tls-")


def _encrypted_copy(key: Path, out: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    pem = serialization.load_pem_private_key(key.read_bytes(), password=None)
    out.write_bytes(pem.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"secret")))
    return out


async def test_a_certificate_valid_in_a_few_seconds_is_taken_with_a_warning(settings, tmp_path, caplog):
    """A certificate issued on a host whose clock runs a little ahead (`openssl x509 -req`
    starts it at the second of issuance) was refused at start (exit 2) and on SIGHUP, where
    the rotation's one signal then never took it and the current certificate ran out: within
    `CLOCK_SKEW` it is taken, and a warning says when clients as late as this host accept it."""
    caplog.set_level(logging.INFO, "tailor.security.transport")
    ca = CertificateAuthority(tmp_path / "ca")
    good = ca.issue("server")
    soon = ca.issue("soon", shift=dt.timedelta(minutes=5, seconds=30))  # valid in 30 s
    later = ca.issue("later", shift=dt.timedelta(minutes=5) + 2 * CLOCK_SKEW)
    ServerTls(soon.cert, soon.key)  # a start with it
    async with _tls_served(settings, tmp_path, good) as (server, target, cert, key):
        for issued in (later, soon):
            shutil.copy(issued.cert, cert)
            shutil.copy(issued.key, key)
            server.reload()
        assert "keeping the current certificate: --tls-cert" in caplog.text  # `later`, once
        assert caplog.text.count("the certificate is not valid until") == 1
        assert f"TLS certificate reloaded from {cert}" in caplog.text
        assert re.search(rf"--tls-cert {cert}: the certificate is valid from .* UTC, \d+ s ahead "
                         "of this host's clock", caplog.text), caplog.text
        shutil.copy(good.cert, cert)
        shutil.copy(good.key, key)
        server.reload()
        await _aping(target, ca.cert)


def test_each_unusable_tls_file_is_named_with_its_flag_and_a_locked_key_asks_no_passphrase(tmp_path, ca):
    a, b = ca.issue("a"), ca.issue("b")
    expired = ca.issue("expired", shift=-dt.timedelta(days=2))
    early = ca.issue("early", shift=dt.timedelta(days=1))
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    locked = _encrypted_copy(a.key, tmp_path / "locked.key")
    cases = [((tmp_path / "missing.pem", a.key, None), f"--tls-cert {tmp_path / 'missing.pem'}: "),
             ((a.cert, tmp_path / "gone.key", None), f"--tls-key {tmp_path / 'gone.key'}: "),
             ((empty, a.key, None), f"--tls-cert {empty}: no PEM certificate"),
             ((a.cert, a.cert, None), f"--tls-key {a.cert}: no PEM private key"),
             ((a.cert, b.key, None), f"--tls-key {b.key}: not the key of --tls-cert {a.cert}"),
             ((a.cert, a.key, empty), f"--tls-client-ca {empty}: no PEM certificate"),
             ((a.cert, locked, None), f"--tls-key {locked}: the key is encrypted"),
             ((expired.cert, expired.key, None), f"--tls-cert {expired.cert}: the certificate expired on"),
             ((early.cert, early.key, None), f"--tls-cert {early.cert}: the certificate is not valid until")]
    for (cert, key, client_ca), expected in cases:
        settings = Settings(tls_cert=cert, tls_key=key, tls_client_ca=client_ca)
        with pytest.raises(ServeRefused) as err:
            ServerTls.from_settings(settings)
        assert str(err.value).startswith(expected), (expected, str(err.value))
    out = run_module("server", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                     "--tls-cert", str(a.cert), "--tls-key", str(locked), check=False, timeout=60,
                     stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "pass phrase" not in out.stdout + out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: --tls-key {locked}: the key is encrypted")


def test_a_reload_to_a_locked_key_keeps_the_old_certificate_and_asks_no_passphrase(tmp_path, caplog):
    """OpenSSL prompts on the terminal for a locked key unless told not to: the handshake
    thread then waited for a passphrase nobody types, and every new connection hung."""
    ca = CertificateAuthority(tmp_path / "ca")
    a = ca.issue("server")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(a.cert, cert)
    shutil.copy(a.key, key)
    tls = ServerTls(cert, key)
    _encrypted_copy(a.key, key)
    tls.reload()
    assert tls._fetch() is None  # the current pair stays
    assert f"--tls-key {key}: the key is encrypted" in caplog.text
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.reload_context(ctx)  # the metrics endpoint's reload: logged, no prompt
    assert "TLS reload (HTTP) failed" in caplog.text
    from server.http.public import server_ssl_context
    with pytest.raises(ServeRefused, match="the key is encrypted"):  # the public port's start
        server_ssl_context(tls)
    shutil.copy(a.key, key)
    _, reload_public = server_ssl_context(tls)
    _encrypted_copy(a.key, key)
    reload_public()  # the public port's reload: logged, no prompt
    assert "TLS reload (public HTTP) failed" in caplog.text and "the key is encrypted" in caplog.text


def test_insecure_serves_a_non_loopback_bind_and_says_so(server_process, demo_bundle):
    server = server_process(bundle=demo_bundle, args=("--host", "0.0.0.0", "--insecure"))
    _ping(server.target, Connection())
    assert "serving without TLS and authentication" in server.stop()


def test_loopback_without_auth_serves_and_logs_it_is_unauthenticated(server_process, demo_bundle):
    server = server_process(bundle=demo_bundle)
    _ping(server.target, Connection())
    assert "every caller is unauthenticated" in server.stop()


def test_exposure_rule():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not any(map(is_loopback, ("0.0.0.0", "::", "10.0.0.5", "tailor.internal")))
    tls = dict(tls_cert="c.pem", tls_key="c.key")
    assert check_exposure(Settings(host="0.0.0.0", auth_config="auth.toml", **tls)) is None
    for refused in (dict(host="10.0.0.5", **tls), dict(host="::", auth_config="auth.toml")):
        with pytest.raises(ServeRefused, match="refusing"):
            check_exposure(Settings(**refused))
    assert "unauthenticated" in check_exposure(Settings(host="0.0.0.0", insecure=True))
    with pytest.raises(ServeRefused, match="go together"):
        check_exposure(Settings(tls_cert="c.pem"))
    with pytest.raises(ServeRefused, match="needs --tls-cert"):
        check_exposure(Settings(tls_client_ca="ca.pem"))


def test_plain_smtp_is_refused_unless_the_relay_is_on_loopback():
    """`smtp_security` none is "a relay on loopback only", but a relay elsewhere was used
    as well: every email and the relay's password crossed the network unencrypted."""
    for host in ("relay.example.com", "10.0.0.7"):
        with pytest.raises(ServeRefused, match=f"TAILOR_SMTP_SECURITY=none .* to {host}: .*--insecure"):
            check_exposure(Settings(smtp_host=host, smtp_security="none", smtp_username="u"))
    for allowed in (dict(smtp_host="127.0.0.1", smtp_security="none"),
                    dict(smtp_host="localhost", smtp_security="none"),
                    dict(smtp_host="relay.example.com"),  # starttls
                    dict(smtp_host="relay.example.com", smtp_security="tls"),
                    dict(smtp_host="relay.example.com", smtp_security="none", insecure=True)):
        check_exposure(Settings(**allowed))


def _settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("TAILOR_").lower(): v for k, v in env.items()
                       if k.startswith("TAILOR_")})


def test_the_image_alone_refuses_and_each_deployment_opts_out_explicitly():
    from tests.test_deploy_files import compose, docker_env, k8s_env
    with pytest.raises(ServeRefused, match="refusing to serve on 0.0.0.0"):
        check_exposure(_settings_of(docker_env()))  # a bare `docker run`
    compose_env = {k: str(v) for k, v in compose()["services"]["tailor"]["environment"].items()}
    for env in (k8s_env(), {**docker_env(), **compose_env}):
        assert "unauthenticated" in check_exposure(_settings_of(env))


def test_a_client_ca_every_user_may_write_is_refused_at_start_and_on_reload(tmp_path, ca, caplog):
    """The client CA decides who may present a certificate, and certificate names are
    principals (admin, say): whoever could write the file added a CA of their own, issued
    themselves that name and, after the next SIGHUP, called as that principal. The auth
    config and the JWT keys were refused for that; the client CA was not."""
    a = ca.issue("server")
    client_ca = tmp_path / "clients.pem"
    shutil.copy(ca.cert, client_ca)
    client_ca.chmod(0o666)
    with pytest.raises(ServeRefused, match=rf"--tls-client-ca {client_ca}: every user may write "
                                           r"it \(mode 0666\).*chmod o-w"):
        ServerTls.from_settings(Settings(tls_cert=a.cert, tls_key=a.key, tls_client_ca=client_ca))
    client_ca.chmod(0o644)
    tls = ServerTls(a.cert, a.key, client_ca)
    client_ca.chmod(0o666)
    tls.reload()
    assert tls._fetch() is None  # the current trust stays
    assert f"--tls-client-ca {client_ca}: every user may write it" in caplog.text
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.reload_context(ctx)  # the metrics endpoint's reload
    assert ctx.sni_callback is None and "TLS reload (HTTP) failed" in caplog.text


def test_a_tls_key_every_user_may_read_is_warned_about_at_start_and_on_reload(
        server_process, ca, demo_bundle, caplog):
    """Keyrings every user may read start with a warning; the TLS key, whose copy lets anyone
    on the host pass for the server (and be sent the clients' tokens), started without a word."""
    issued = ca.issue("server")
    issued.key.chmod(0o644)
    tls = Connection(tls_ca=ca.cert)
    server = server_process(bundle=demo_bundle, connection=tls,
                            args=("--tls-cert", str(issued.cert), "--tls-key", str(issued.key)))
    _ping(server.target, tls)
    assert f"--tls-key {issued.key}: every user may read it (mode 0644)" in server.stop()
    issued.key.chmod(0o640)
    reloaded = ServerTls(issued.cert, issued.key)
    assert "every user may read it" not in caplog.text  # group-readable: no warning
    issued.key.chmod(0o604)
    reloaded.reload()
    assert reloaded._fetch() is not None  # still loaded, with the warning
    assert f"--tls-key {issued.key}: every user may read it (mode 0604)" in caplog.text


def test_insecure_names_what_it_let_through_even_with_tls_and_auth_on(server_process, ca,
                                                                      demo_bundle, tmp_path):
    """The deployment files set TAILOR_INSECURE=true until certificates are mounted: one left
    set beside TLS and an auth config let plain SMTP to a relay off the host (every email and
    the relay's login in clear) start without a word."""
    issued = ca.issue("server")
    auth = tmp_path / "auth.toml"
    auth.write_text("")
    tls = Connection(tls_ca=ca.cert)
    server = server_process(bundle=demo_bundle, connection=tls, env={
        "TAILOR_SMTP_HOST": "10.0.0.7", "TAILOR_SMTP_SECURITY": "none"}, args=(
        "--tls-cert", str(issued.cert), "--tls-key", str(issued.key), "--auth-config", str(auth),
        "--insecure"))
    log = server.stop()
    assert "--insecure: TAILOR_SMTP_SECURITY=none sends email and the relay login unencrypted " \
           "to 10.0.0.7" in log
    assert "serving without" not in log
