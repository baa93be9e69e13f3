"""The /metrics endpoint against clients that connect and send nothing: a thread each, for good
(prometheus-client's server), and over TLS one such client stopped every scrape (its handshake
ran inside `accept`). Now each connection is done within `limits.metrics_seconds`, at most
`limits.metrics_connections` at once (`server.metrics_http`)."""
import socket
import ssl
import time
import urllib.request

import pytest

from loadtests.certs import CertificateAuthority
from server.limits import Limits
from server.metrics import serve_metrics
from server.security.transport import ServerTls
from tests.conftest import free_port

MOST, SECONDS = 2, 1.0


def _scrape(port: int, tls: ServerTls | None, ca=None) -> bool:
    scheme = "https" if tls is not None else "http"
    ctx = ssl.create_default_context(cafile=str(ca)) if tls is not None else None
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/metrics", timeout=3,
                                    context=ctx) as reply:
            return b"grpc_server_started" in reply.read()
    except OSError:
        return False


@pytest.fixture(params=["http", "https"])
def endpoint(request, tmp_path):
    """(port, ServerTls or None, CA file): a metrics endpoint of the tests' limits."""
    tls = ca = None
    if request.param == "https":
        authority = CertificateAuthority(tmp_path / "ca")
        issued = authority.issue("server")
        tls, ca = ServerTls(issued.cert, issued.key), authority.cert
    port = free_port()
    serve_metrics(port, "127.0.0.1", tls, Limits(metrics_connections=MOST,
                                                  metrics_seconds=SECONDS))
    return port, tls, ca


def test_a_silent_connection_is_cut_and_holds_no_scrape_up(endpoint):
    port, tls, ca = endpoint
    silent = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.2)
    assert _scrape(port, tls, ca)  # over TLS: timed out while the silent one lasted, for good
    silent.settimeout(SECONDS + 3)
    started = time.monotonic()
    assert silent.recv(100) == b""  # cut after the bound
    assert time.monotonic() - started < SECONDS + 1


def test_connections_past_the_bound_are_closed_and_the_places_come_back(endpoint):
    port, tls, ca = endpoint
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(MOST)]
    time.sleep(0.3)
    assert not _scrape(port, tls, ca)  # every place taken: closed at once
    for sock in held:
        sock.settimeout(SECONDS + 3)
        assert sock.recv(100) == b""
    time.sleep(0.1)
    assert _scrape(port, tls, ca)


def _trickle(sock, data: bytes, every: float, most: float) -> float:
    """Send `data` a byte every `every` s until the server cuts `sock`; seconds it lasted."""
    started = time.monotonic()
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(every)
            if time.monotonic() - started > most:
                break
        sock.settimeout(0.5)
        sock.recv(100)
    except OSError:
        pass
    return time.monotonic() - started


def test_a_request_trickled_a_byte_at_a_time_is_cut_within_the_bound(endpoint):
    port, tls, ca = endpoint
    sock = socket.create_connection(("127.0.0.1", port))
    if tls is not None:  # after the handshake: the deadline cut a detached socket, so nothing
        sock = ssl.create_default_context(cafile=str(ca)).wrap_socket(
            sock, server_hostname="127.0.0.1")
    head = b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 64
    assert _trickle(sock, head, SECONDS / 3, 5 * SECONDS) < SECONDS + 1.5

