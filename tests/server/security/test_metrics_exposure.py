"""The metrics endpoint listens on this machine only unless `metrics_host` says otherwise
(its figures name campaigns, model versions and counts; no credential but a client
certificate guards it), whatever `host` the gRPC port serves on."""
import socket
import urllib.request

import pytest

from server.config import Settings
from server.security.errors import ServeRefused
from server.security.secrets import Secrets
from server.security.transport import check_exposure


def _outside_address() -> str:
    """An address of this machine other than loopback (skips without one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
            address = s.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("no non-loopback IPv4 address here")
    return address


def _reads(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=5) as reply:
            return b"grpc_server_started" in reply.read() or reply.status == 200
    except OSError:
        return False


def test_metrics_stay_on_loopback_when_grpc_listens_on_every_address(server_process, tmp_path):
    """Before: the metrics port listened on `host` (0.0.0.0 here), readable from anywhere."""
    outside = _outside_address()
    Secrets.load(tmp_path / "secrets", generate=True, development=False)  # `secrets init`
    server = server_process(args=("--host", "0.0.0.0", "--insecure"),
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert _reads("127.0.0.1", server.metrics_port)
    assert not _reads(outside, server.metrics_port)
    assert "metrics on http://127.0.0.1:" in server.stop()


def test_a_metrics_host_set_without_tls_serves_there_with_insecure_and_warns(server_process,
                                                                               tmp_path):
    outside = _outside_address()
    server = server_process(args=("--metrics-host", "0.0.0.0", "--insecure"),
                            env={"TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert _reads(outside, server.metrics_port)
    log = server.stop()
    assert "metrics on 0.0.0.0:" in log and "in plain HTTP: anyone who reaches the port" in log


def test_a_non_loopback_metrics_host_without_tls_is_refused_unless_insecure():
    """Before: served in plain HTTP off this machine with a warning, where a non-loopback
    `host` without TLS is refused (`--insecure` is the one way to allow either)."""
    with pytest.raises(ServeRefused, match="metrics on 0.0.0.0:9100 without TLS"):
        check_exposure(Settings(metrics_port=9100, metrics_host="0.0.0.0"))
    assert "in plain HTTP" in check_exposure(
        Settings(metrics_port=9100, metrics_host="0.0.0.0", insecure=True))


def test_the_exposure_warning_names_the_metrics_port_only_when_it_is_exposed_without_a_ca(
        tmp_path):
    from loadtests.certs import CertificateAuthority
    issued = CertificateAuthority(tmp_path / "ca").issue("server")
    assert "metrics" not in (check_exposure(Settings(metrics_port=9100)) or "")
    assert "metrics on 0.0.0.0:9100 without --tls-client-ca" in check_exposure(
        Settings(metrics_port=9100, metrics_host="0.0.0.0", tls_cert=issued.cert,
                 tls_key=issued.key))
    assert "metrics" not in (check_exposure(Settings(metrics_port=9100, metrics_host="::1")) or "")
