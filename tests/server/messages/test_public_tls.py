"""With TLS on, the public endpoint serves HTTPS with the gRPC port's certificate."""
import asyncio
import contextlib
import shutil
import ssl

import aiohttp
import pytest

from loadtests.certs import CertificateAuthority
from server.app import TailorServer
from tests.conftest import free_port


@contextlib.asynccontextmanager
async def tls_served(settings, tmp_path, **update):
    """(server, its CA, the certificate it serves) of a server with TLS and the public
    endpoint on (and `update` on its settings); stopped on leaving."""
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue("server")
    server = TailorServer(settings.model_copy(update={
        "tls_cert": issued.cert, "tls_key": issued.key, "public_http_port": free_port(), **update}))
    await server.start()
    try:
        yield server, ca, issued
    finally:
        await server.stop(grace=0.5)


async def test_the_public_port_speaks_https_with_the_grpc_certificate(settings, tmp_path):
    async with tls_served(settings, tmp_path) as (server, ca, _):
        token = server.tokens.issue("u1", "email", "c")
        base = f"127.0.0.1:{server.public.port}/u/{token}"
        trust = ssl.create_default_context(cafile=str(ca.cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://{base}", ssl=trust) as res:
                assert res.status == 200 and "Unsubscribe" in await res.text()
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://{base}") as res:  # no plain HTTP on that port
                    await res.text()
        assert server.composer.public_base == f"https://127.0.0.1:{server.public.port}"


async def test_connections_in_their_tls_handshake_count_toward_the_cap_and_are_bounded(
        settings, tmp_path):
    """Before: asyncio held a TLS connection that never sent its ClientHello for 60 s, and the
    cap counted it only once its handshake was done: ~20 such sockets a second used up the
    process's files (and the gRPC port with them)."""
    from server.limits import Limits
    most, idle = 3, 1.0
    async with tls_served(settings, tmp_path, limits=Limits(
            http_connections=most, http_idle_seconds=idle)) as (server, ca, _):
        port = server.public.port
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(most)]
        await asyncio.sleep(0.1)
        over, _ = await asyncio.open_connection("127.0.0.1", port)
        # past the cap: the one waiting longest for its ClientHello is closed at once, to
        # make room (`bounds.ConnectionCap.make_room`)
        assert await asyncio.wait_for(silent[0][0].read(), idle / 2) == b""
        for reader, _ in (*silent[1:], (over, None)):  # no ClientHello within the idle limit
            assert await asyncio.wait_for(reader.read(), idle + 3) == b""
        trust = ssl.create_default_context(cafile=str(ca.cert))
        token = server.tokens.issue("u1", "email", "c")
        async with aiohttp.ClientSession() as http:  # their places are free again
            async with http.get(f"https://127.0.0.1:{port}/u/{token}", ssl=trust) as res:
                assert res.status == 200


async def test_a_reload_to_a_certificate_without_its_key_keeps_serving_the_old_pair(
        settings, tmp_path, caplog):
    """A rotation copied half-way (the new certificate in place, the key still the old one),
    then SIGHUP. Before: the reload loaded the new certificate into the live context, which
    dropped the old key (it no longer matched), then refused the old key: every later
    handshake failed, though the log said the current certificate was kept."""
    async with tls_served(settings, tmp_path) as (server, ca, issued):
        token = server.tokens.issue("u1", "email", "c")
        url = f"https://127.0.0.1:{server.public.port}/u/{token}"
        trust = ssl.create_default_context(cafile=str(ca.cert))
        following = ca.issue("next")
        shutil.copy(following.cert, issued.cert)  # the new certificate, not yet its key
        server.reload()
        failed = [r.getMessage() for r in caplog.records if "public HTTP" in r.getMessage()]
        assert failed and str(issued.cert) in failed[0] and str(issued.key) in failed[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=trust) as res:  # the old pair serves on
                assert res.status == 200
        assert await _served_name(server.public.port, trust) == "server"
        shutil.copy(following.key, issued.key)  # the rotation completed: the new pair
        server.reload()
        assert await _served_name(server.public.port, trust) == "next"


async def _served_name(port: int, trust: ssl.SSLContext) -> str:
    """The common name of the certificate the port presents to a new connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
    try:
        subject = dict(pair[0] for pair in writer.get_extra_info("peercert")["subject"])
        return subject["commonName"]
    finally:
        writer.close()
