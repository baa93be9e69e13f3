"""Build Tailor: the Cython kernels (kernels/_*.pyx) and the gRPC stubs (protos/tailor/v1).

    python setup.py build_protos            # regenerate protos/tailor/v1/*_pb2*.py(i) (`make protos`)
    python setup.py build_ext --inplace     # compile every kernel next to its .pyx

The stubs are committed and no other command (build, build_py, pip install) rewrites them, so
tests/test_protos_fresh.py compares protoc's output with what is committed, not with itself.

Environment:
    TAILOR_KERNELS=_bandits,_features   build only these kernels (development)
    TAILOR_CYTHON_DEBUG=1               turn bounds/wraparound checks back on
"""
import glob
import os
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Command, Extension, setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from protos.generate import generate_protos  # noqa: E402 (needs ROOT on the path)

DEBUG = os.environ.get("TAILOR_CYTHON_DEBUG") == "1"
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "nonecheck": False,
    "cdivision": True,
    "embedsignature": True,
}


class BuildProtos(Command):
    description = "generate the gRPC/protobuf stubs under protos/tailor/v1"
    user_options: list = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        for path in generate_protos():
            print(f"generated {path.relative_to(ROOT)}")


LIBRARIES = {"_aead": ["crypto"], "_keyed": ["crypto"]}
"""Libraries a kernel links against (OpenSSL's libcrypto: headers from libssl-dev)."""
HEADERS = {"_aead": "openssl/core_dispatch.h", "_keyed": "openssl/sha.h"}
"""A header a kernel needs: without it the kernel is skipped (`kernels.aead` then runs its
reference, `cryptography`; `kernels.keyed`, `hashlib`)."""


def _has_header(name: str) -> bool:
    dirs = ["/usr/include", "/usr/local/include", os.path.join(sys.prefix, "include"),
            *os.environ.get("C_INCLUDE_PATH", "").split(os.pathsep)]
    return any(d and os.path.exists(os.path.join(d, name)) for d in dirs)


def kernel_extensions() -> list[Extension]:
    wanted = {k for k in os.environ.get("TAILOR_KERNELS", "").split(",") if k}
    exts = []
    for pyx in sorted(glob.glob("kernels/_*.pyx")):
        name = Path(pyx).stem
        if wanted and name not in wanted:
            continue
        if name in HEADERS and not _has_header(HEADERS[name]):
            print(f"skipping kernels.{name}: {HEADERS[name]} not found", file=sys.stderr)
            continue
        exts.append(Extension(
            f"kernels.{name}", [pyx],
            include_dirs=[np.get_include(), "kernels"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"] if sys.platform != "win32" else [],
            libraries=LIBRARIES.get(name, []),
        ))
    return cythonize(exts, compiler_directives=COMPILER_DIRECTIVES, quiet=True)


setup(
    ext_modules=kernel_extensions(),
    cmdclass={"build_protos": BuildProtos},
)
