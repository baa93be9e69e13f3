"""The committed stubs are exactly what protoc generates from the committed protos.

Nothing in the build regenerates the stubs in place (`make build` and setup.py's build_py leave
protos/tailor/v1 alone; `make protos` is the one way to rewrite them), so this compares protoc's
output, written to a temporary directory, with the stub files as they are in the tree.
"""
import shutil
from pathlib import Path

from protos.generate import generate_protos
from tests.conftest import ROOT

PROTOS = ROOT / "protos"


def stale_stubs(proto_root: Path, scratch: Path) -> list[str]:
    """Stub files under proto_root/tailor/v1 that differ from, lack or add to protoc's output
    for the .proto files beside them (paths relative to proto_root)."""
    shutil.copytree(proto_root / "tailor", scratch / "tailor",
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    fresh = {p.relative_to(scratch): p.read_text() for p in generate_protos(scratch)}
    assert fresh, "protoc generated nothing"
    stubs = {p.relative_to(proto_root): p.read_text()
             for p in (proto_root / "tailor" / "v1").glob("*_pb2*.py*")}
    return sorted(str(rel) for rel in fresh.keys() | stubs.keys() if fresh.get(rel) != stubs.get(rel))


def test_committed_stubs_match_the_protos(tmp_path):
    assert stale_stubs(PROTOS, tmp_path) == [], "stale stubs: run `make protos` and commit them"


def test_an_edited_proto_with_stale_stubs_is_caught(tmp_path):
    """The check above can fail: a field added to one message leaves that file's stubs stale."""
    edited = tmp_path / "edited"
    shutil.copytree(PROTOS / "tailor", edited / "tailor", ignore=shutil.ignore_patterns("__pycache__"))
    proto = edited / "tailor" / "v1" / "diagnostics.proto"
    text = proto.read_text()
    assert "message PingRequest {}" in text
    proto.write_text(text.replace("message PingRequest {}", "message PingRequest { string note = 1; }"))
    # a message change touches the messages module and its type stub, not the service stub
    assert stale_stubs(edited, tmp_path / "scratch") == ["tailor/v1/diagnostics_pb2.py",
                                                         "tailor/v1/diagnostics_pb2.pyi"]


def test_a_stub_without_its_proto_is_caught(tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(PROTOS / "tailor", edited / "tailor", ignore=shutil.ignore_patterns("__pycache__"))
    (edited / "tailor" / "v1" / "diagnostics.proto").unlink()
    assert stale_stubs(edited, tmp_path / "scratch") == [
        "tailor/v1/diagnostics_pb2.py", "tailor/v1/diagnostics_pb2.pyi", "tailor/v1/diagnostics_pb2_grpc.py"]
