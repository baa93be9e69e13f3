"""The secure-by-default rule covers the public HTTP port's links."""
from pathlib import Path

import pytest

from server.config import Settings
from server.security.errors import ServeRefused
from server.security.transport import check_exposure

SECURE = dict(host="10.1.2.3", tls_cert=Path("c.pem"), tls_key=Path("k.pem"),
              auth_config=Path("auth.toml"), public_http_port=8443)


def test_an_exposed_public_port_needs_an_https_public_url():
    with pytest.raises(ServeRefused, match="needs --public-url"):
        check_exposure(Settings(**SECURE))
    with pytest.raises(ServeRefused, match="must be https://"):
        check_exposure(Settings(**SECURE, public_url="http://t.example"))
    assert check_exposure(Settings(**SECURE, public_url="https://t.example")) is None
    relaxed = check_exposure(Settings(**SECURE, public_url="http://t.example", insecure=True))
    assert relaxed.startswith("--insecure: unsubscribe links are built on http://t.example")


def test_loopback_may_link_over_plain_http():
    assert "serving without" in check_exposure(Settings(public_http_port=8080))
