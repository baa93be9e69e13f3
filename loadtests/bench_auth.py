"""Per-call cost of the auth interceptor's check, in process (issue 14).

    python -m loadtests.bench_auth [--calls 200000]

Times what every intercepted call pays before its handler: the caller found from the metadata
(`Authenticator.known`, in `intercept_service`), handed to the handler and checked against the
method's roles (`AuthInterceptor._caller`), for a bearer token, a cached JWT, and a server
without an auth config, on a minimal stand-in for the servicer context (metadata as grpc.aio
gives it), plus the ContextVar set/reset the wrapped handler adds. A JWT's first call is
authenticated with its transport (`authorize`). Prints µs per call (best of 5 rounds).
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.security import tokens
from server.security.authn import Authenticator
from server.security.interceptor import AuthInterceptor, _known, _principal
from server.security.principals import load_auth_config

from .measure import positive

METHOD = "/tailor.v1.RecommendationService/Recommend"


class _Context:
    def __init__(self, metadata):
        self._metadata = tuple(metadata)

    def invocation_metadata(self):
        return self._metadata

    def auth_context(self):
        return {}

    def peer(self):
        return "ipv4:127.0.0.1:50000"

    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


def _config(folder: Path) -> tuple[Path, str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "k.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path = folder / "auth.toml"
    path.write_text('[jwt]\nissuer = "i"\naudience = "tailor"\npublic_keys = ["k.pem"]\n')
    for i in range(10):  # other principals: the lookup is a dict hit whatever their number
        tokens.mint(path, f"svc{i}", ["tracker"])
    token = tokens.mint(path, "recs", ["decider"])
    signed = jwt.encode({"sub": "s", "iss": "i", "aud": "tailor", "exp": time.time() + 3600,
                         "roles": ["decider"]}, key, algorithm="ES256")
    return path, token, signed


async def _time(interceptor: AuthInterceptor, context, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            known = _known.set(interceptor.authenticator.known(context.invocation_metadata()))
            principal = await interceptor._caller(METHOD, context, None)
            _principal.reset(_principal.set(principal))
            _known.reset(known)
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, token, signed = _config(Path(tmp))
        config = load_auth_config(path)
        secured = AuthInterceptor(Authenticator(config), config.roles)
        open_ = AuthInterceptor(Authenticator(None))
        cases = {"bearer token": (secured, [("authorization", f"Bearer {token}"),
                                             ("user-agent", "grpc-python/1.85")]),
                 "JWT (cached after the first call)": (secured, [("authorization", f"Bearer {signed}")]),
                 "no auth config": (open_, [("user-agent", "grpc-python/1.85")])}
        for name, (interceptor, metadata) in cases.items():
            us = await _time(interceptor, _Context(metadata), calls)
            print(f"{name:36s} {us:6.2f} µs/call")
        started = time.perf_counter()
        for _ in range(200):
            secured.authenticator.jwt._cache.clear()
            await secured.authorize(METHOD, _Context([("authorization", f"Bearer {signed}")]))
        us = (time.perf_counter() - started) / 200 * 1e6
        print(f"{'JWT, first call (ES256 verify)':36s} {us:6.1f} µs/call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_auth",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=positive(int), default=200_000)
    asyncio.run(main(parser.parse_args().calls))
