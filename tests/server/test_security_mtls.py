"""The mTLS identity through a real TLS connection: the auth interceptor finds the principal from
the client certificate's CN or SAN in `context.auth_context()`. TailorServer's own TLS port is
the transport's business; here a bare grpc.aio server carries the interceptor and one service."""
import datetime
import ipaddress

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc as dpb_grpc
from protos.tailor.v1 import model_admin_pb2 as mpb
from protos.tailor.v1 import model_admin_pb2_grpc as mpb_grpc
from server.security.authn import Authenticator
from server.security.interceptor import AuthInterceptor
from server.security.principals import load_auth_config
from server.services.diagnostics import DiagnosticsServicer
from tests.conftest import free_port


def _cert(name: str, issuer_key, issuer_name, key, ca=False, san=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tailor-test-ca")])
    ca = _cert("tailor-test-ca", ca_key, ca_name, ca_key, ca=True)
    out = {"ca": _pem(ca)}
    for who, san in (("server", [x509.DNSName("localhost"),
                                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                     ("ops-client", [x509.DNSName("ops.tailor.internal")]),
                     ("stranger", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        out[who] = (_pem(key), _pem(_cert(who, ca_key, ca_name, key, san=san)))
    return out


@pytest_asyncio.fixture
async def mtls_target(pki, tmp_path):
    path = tmp_path / "auth.toml"
    path.write_text('[principals.ops]\nroles = ["decider"]\ncert_subject = "ops.tailor.internal"\n')
    config = load_auth_config(path)
    server = grpc.aio.server(interceptors=[AuthInterceptor(Authenticator(config), config.roles)])
    dpb_grpc.add_DiagnosticsServiceServicer_to_server(DiagnosticsServicer(), server)
    mpb_grpc.add_ModelAdminServiceServicer_to_server(mpb_grpc.ModelAdminServiceServicer(), server)
    creds = grpc.ssl_server_credentials([pki["server"]], root_certificates=pki["ca"],
                                        require_client_auth=True)
    port = server.add_secure_port(f"127.0.0.1:{free_port()}", creds)
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0.1)


def _channel(pki, target, who):
    key, cert = pki[who]
    creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"], private_key=key,
                                         certificate_chain=cert)
    return grpc.aio.secure_channel(target, creds)


async def test_a_known_client_certificate_is_the_principal(pki, mtls_target):
    async with _channel(pki, mtls_target, "ops-client") as ch:
        await dpb_grpc.DiagnosticsServiceStub(ch).Ping(dpb.PingRequest())
        with pytest.raises(grpc.RpcError) as err:
            await mpb_grpc.ModelAdminServiceStub(ch).Rollback(mpb.RollbackRequest())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "ops lacks the role admin" in err.value.details()


async def test_a_valid_but_unknown_certificate_is_unauthenticated(pki, mtls_target):
    async with _channel(pki, mtls_target, "stranger") as ch:
        with pytest.raises(grpc.RpcError) as err:
            await dpb_grpc.DiagnosticsServiceStub(ch).Ping(dpb.PingRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
