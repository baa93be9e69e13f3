"""With TLS on, the public endpoint serves HTTPS with the gRPC port's certificate."""
import ssl

import aiohttp
import pytest

from loadtests.certs import CertificateAuthority
from server.app import TailorServer
from tests.conftest import free_port


async def test_the_public_port_speaks_https_with_the_grpc_certificate(settings, tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue("server")
    server = TailorServer(settings.model_copy(update={
        "tls_cert": issued.cert, "tls_key": issued.key, "public_http_port": free_port()}))
    await server.start()
    try:
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
    finally:
        await server.stop(grace=0.5)
