"""Generate the Python stubs of every `tailor/v1/*.proto` (used by setup.py and the tests).

    python -m protos.generate        # same as `python setup.py build_protos`
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["generate_protos"]

PROTO_ROOT = Path(__file__).resolve().parent


def generate_protos(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc over tailor/v1 under `proto_root`; stubs import each other relatively."""
    from grpc_tools import protoc

    pkg = proto_root / "tailor" / "v1"
    protos = sorted(str(p.relative_to(proto_root)) for p in pkg.glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={proto_root}",
            f"--grpc_python_out={proto_root}", f"--pyi_out={proto_root}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(protos))
    written = sorted(pkg.glob("*_pb2*.py*"))
    for path in written:
        text = path.read_text()
        fixed = re.sub(r"^from tailor\.v1 import (\w+_pb2)", r"from . import \1", text, flags=re.M)
        if fixed != text:
            path.write_text(fixed)
    return written


if __name__ == "__main__":
    for written in generate_protos():
        print(f"generated {written}")
