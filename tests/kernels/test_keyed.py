"""`kernels.keyed`: the SHA-256 kernel and its hashlib reference against `hmac.new`."""
import hashlib
import hmac
import os
import threading
import time

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


@pytest.mark.parametrize("use_native", BOTH)
def test_many_tokens_leave_the_gil_to_other_threads(use_native):
    """A loading thread hashing a bundle's users (`tokens.user_tokens`, `release=True`) lets the
    event loop's thread run meanwhile: the other thread here ticks while the call is under way
    (a kernel that kept the GIL for the whole list let it tick at most once or twice)."""
    h = keyed.KeyedHash(os.urandom(32), use_native)
    bodies = [b"user-%09d" % i for i in range(400_000)]
    started, done, ticks = threading.Event(), threading.Event(), []

    def hash_all():
        started.set()
        h.tokens(b"u\x00", bodies, 32, release=True)
        done.set()

    worker = threading.Thread(target=hash_all)
    worker.start()
    started.wait()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.0005)
    worker.join()
    assert len(ticks) >= 10, f"{len(ticks)} ticks while {len(bodies)} tokens were hashed"


@pytest.mark.parametrize("use_native", BOTH)
def test_released_tokens_are_the_same(use_native):
    h = keyed.KeyedHash(os.urandom(70), use_native)
    for n in (0, 1, 63, 64, 65, 1000):
        bodies = [os.urandom(i % 90) for i in range(n)]
        assert h.tokens(b"e\x00", bodies, 32, release=True) == h.tokens(b"e\x00", bodies, 32)


def test_the_built_kernel_is_the_one_this_module_expects():
    """`kernels.keyed` serves its reference from a `_keyed` built before `tokens(..., release)`
    (a stale build would otherwise fail every bundle load); the build here is fresh and used."""
    native = pytest.importorskip("kernels._keyed", reason="not built")
    assert getattr(native, "API", None) == 2, "kernels._keyed is stale: rebuild it (make build)"
    assert keyed.NATIVE and type(keyed.KeyedHash(b"k")) is native.KeyedHash
