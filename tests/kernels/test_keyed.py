"""`kernels.keyed`: the SHA-256 kernel and its hashlib reference against `hmac.new`."""
import hashlib
import hmac
import os

import pytest

from kernels import keyed

BOTH = [pytest.param(True, marks=pytest.mark.skipif(not keyed.NATIVE, reason="not built")), False]


@pytest.mark.parametrize("use_native", BOTH)
@pytest.mark.parametrize("key_bytes", [0, 1, 32, 63, 64, 65, 200])
def test_digests_are_hmac_sha256(use_native, key_bytes):
    key = os.urandom(key_bytes)
    h = keyed.KeyedHash(key, use_native)
    for message in (b"", b"u\x00ann", os.urandom(55), os.urandom(64), os.urandom(300)):
        assert h.hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("use_native", BOTH)
def test_tokens_are_the_digests_first_hex_characters(use_native):
    key = os.urandom(32)
    h = keyed.KeyedHash(key, use_native)
    bodies = [b"", b"e1", "ünï".encode(), os.urandom(100)]
    want = [hmac.new(key, b"e\x00" + b, hashlib.sha256).hexdigest() for b in bodies]
    for chars in (0, 1, 31, 32, 64):
        assert h.tokens(b"e\x00", bodies, chars) == [w[:chars].encode() for w in want]
        assert [h.token(b"e\x00", b, chars) for b in bodies] == [w[:chars].encode() for w in want]


@pytest.mark.parametrize("use_native", BOTH)
def test_bad_arguments_are_refused(use_native):
    h = keyed.KeyedHash(b"k", use_native)
    for chars in (-1, 65):
        with pytest.raises(ValueError, match="chars"):
            h.token(b"", b"x", chars)
        with pytest.raises(ValueError, match="chars"):
            h.tokens(b"", [b"x"], chars)
    with pytest.raises(TypeError):
        h.tokens(b"", [b"x", None], 32)
    with pytest.raises(TypeError):
        h.token(b"", None, 32)
