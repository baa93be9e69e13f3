"""`kernels.aead`: the OpenSSL kernel against `cryptography`'s AESGCM (the reference), byte for
byte both ways, and forged or misplaced values refused."""
import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernels import aead

pytestmark = pytest.mark.skipif(not aead.NATIVE, reason="kernels._aead not built (no libcrypto)")


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 300, 4096])
def test_one_record_is_the_references_bytes_both_ways(size):
    key, nonce, data, aad = os.urandom(32), os.urandom(12), os.urandom(size), os.urandom(size % 41)
    native, ref = aead.AesGcm(key), AESGCM(key)
    sealed = native.encrypt(nonce, data, aad)
    assert sealed == ref.encrypt(nonce, data, aad) and len(sealed) == size + 16
    assert native.decrypt(nonce, sealed, aad) == data == ref.decrypt(nonce, sealed, aad)
    for forged in (sealed[:-1] + bytes([sealed[-1] ^ 1]), sealed[:8], b""):
        with pytest.raises(InvalidTag):
            native.decrypt(nonce, forged, aad)
    with pytest.raises(InvalidTag):
        native.decrypt(nonce, sealed, aad + b"x")


@pytest.mark.parametrize("use_native", [True, False])
def test_records_seal_and_open_as_one_call_per_record_would(use_native):
    keys = [os.urandom(32) for _ in range(3)]
    ciphers = [aead.AesGcm(k, use_native) for k in keys] + [None]
    ids = [b"k0", b"k1", b"k2", b"plain"]
    values = [b"alpha", b"", os.urandom(500), b"left as it is"]
    nonces = os.urandom(12 * 4)
    sealed = aead.seal_records(ciphers, ids, values, b"\x01", b"tailor\x00", nonces)
    for i, key in enumerate(keys):  # head | nonce | AES-GCM with aad | key
        assert sealed[i][:13] == b"\x01" + nonces[12 * i:12 * i + 12]
        assert AESGCM(key).decrypt(sealed[i][1:13], sealed[i][13:], b"tailor\x00" + ids[i]) == values[i]
    assert sealed[3] == values[3]
    opened = aead.open_records(ciphers, ids, sealed[:3] + [None], 13, b"tailor\x00")
    assert opened == values[:3] + [None]
    with pytest.raises(InvalidTag):  # a value moved to another key
        aead.open_records(ciphers[:1], [b"k1"], sealed[:1], 13, b"tailor\x00")


def test_key_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="32"):
        aead.AesGcm(b"short")


@pytest.mark.parametrize("use_native", [True, False])
def test_a_batch_sealed_without_the_gil_is_what_one_call_per_record_gives(use_native):
    """64 records (past the kernel's threshold for releasing the GIL) under 8 keys in runs of 4
    (the kernel re-keys only when the key changes), one record's associated data longer than
    the kernel joins in one buffer, memoryview values on the way back, one forged record
    refused."""
    n = 64
    distinct = [os.urandom(32) for _ in range(8)]
    shared = [aead.AesGcm(k, use_native) for k in distinct]
    keys = [distinct[i // 4 % 8] for i in range(n)]
    ciphers = [shared[i // 4 % 8] for i in range(n)]
    ids = [b"user%03d" % i for i in range(n)]
    ids[5] = b"k" * 300
    values = [os.urandom(i * 7 % 300) for i in range(n)]
    nonces = os.urandom(12 * n)
    sealed = aead.seal_records(ciphers, ids, values, b"\x01", b"t\x00", nonces)
    for i in range(n):
        assert sealed[i] == b"\x01" + nonces[12 * i:12 * i + 12] + AESGCM(keys[i]).encrypt(
            nonces[12 * i:12 * i + 12], values[i], b"t\x00" + ids[i])
    assert aead.open_records(ciphers, ids, [memoryview(s) for s in sealed], 13, b"t\x00") == values
    forged = list(sealed)
    forged[40] = forged[40][:-1] + bytes([forged[40][-1] ^ 1])
    with pytest.raises(InvalidTag):
        aead.open_records(ciphers, ids, forged, 13, b"t\x00")


@pytest.mark.parametrize("native", [True, False])
def test_user_tokens_and_pick_kernel_and_reference(native, monkeypatch):
    monkeypatch.setattr(aead, "NATIVE", native)
    keys = [b"abcd|features", b"abc", b"abcd", b"wxyz|x", b"plain-key", b"abcd|seen"]
    values = [b"v", b"v", b"v", None, b"v", b"v"]
    assert aead.user_tokens(keys, 4, ord("|"), values) == [b"abcd", None, None, None, None, b"abcd"]
    assert aead.user_tokens(keys, 4, ord("|")) == [b"abcd", None, None, b"wxyz", None, b"abcd"]
    memo, plain = {b"abcd": "cipher"}, object()
    tokens = [b"abcd", None, b"gone"]
    assert aead.pick(memo, tokens, plain) == ["cipher", plain, None]
    with pytest.raises(KeyError):  # sealing: every user must have a key
        aead.pick(memo, tokens, strict=True)
    assert aead.pick(memo, tokens[:2], strict=True) == ["cipher", None]
    missing: list = []  # the tokens the memo lacks, in order, repeats kept; None never
    assert aead.pick(memo, tokens + [b"gone", b"new"], None, False, missing) == \
        ["cipher", None, None, None, None]
    assert missing == [b"gone", b"gone", b"new"]
