"""Every proto of protos/tailor/v1 carries the same language options, each derived from its
package (and, for Java's outer class, its file name), so code generated in any language puts
all nine files in one package: protoc-gen-go refused the files without `go_package` ("unable to
determine Go import path"), and each language's default names differed (`CampaignOuterClass`).
docs/clients.md shows the protoc command per language. No Go, Java... compiler runs here."""
import shutil
from pathlib import Path

from google.protobuf import descriptor_pb2, text_format

from tests.conftest import ROOT

PROTOS = ROOT / "protos"
GO_MODULE = "tailor.ai/protos"
"""The Go module the generated Go code is published as (`--go_opt=module=tailor.ai/protos`)."""


def expected_options(package: str, file_name: str) -> descriptor_pb2.FileOptions:
    """The options of `file_name` (tailor/v1/model_admin.proto) in `package` (tailor.v1):
    Go `tailor.ai/protos/tailor/v1;tailorv1`, Java `ai.tailor.v1` (one file per type, outer
    class ModelAdminProto), C# Tailor.V1, Ruby Tailor::V1, PHP Tailor\\V1, Objective-C TXX
    (buf's convention: the initials of the parts before the version, padded with X to 3)."""
    parts = package.split(".")
    names = [p for p in parts if not (p[0] == "v" and p[1:].isdigit())]
    stem = Path(file_name).stem
    return descriptor_pb2.FileOptions(
        go_package=f"{GO_MODULE}/{'/'.join(parts)};{''.join(parts)}",
        java_package="ai." + package, java_multiple_files=True,
        java_outer_classname="".join(w.capitalize() for w in stem.split("_")) + "Proto",
        csharp_namespace=".".join(p.capitalize() for p in parts),
        ruby_package="::".join(p.capitalize() for p in parts),
        php_namespace="\\".join(p.capitalize() for p in parts),
        objc_class_prefix="".join(n[0] for n in names).upper().ljust(3, "X"))


def options_problems(proto_root: Path, scratch: Path) -> list[str]:
    """Each file of tailor/v1 under `proto_root` whose options differ from `expected_options`,
    with both, as protoc reads the .proto files (not the stubs)."""
    from grpc_tools import protoc
    files = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "tailor" / "v1").glob("*.proto"))
    out = scratch / "descriptors.pb"
    assert protoc.main(["protoc", f"-I{proto_root}", f"--descriptor_set_out={out}", *files]) == 0
    found = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert sorted(f.name for f in found) == files
    problems = []
    for f in found:
        want = expected_options(f.package, f.name)
        if f.options != want:
            problems.append(f"{f.name}: {text_format.MessageToString(f.options, as_one_line=True)!r}"
                            f" should be {text_format.MessageToString(want, as_one_line=True)!r}")
    return problems


def test_every_proto_has_the_options_of_its_package(tmp_path):
    assert options_problems(PROTOS, tmp_path) == []


def test_a_proto_with_a_different_option_is_caught(tmp_path):
    """The check above can fail: one file's C# namespace changed, or its Go package dropped."""
    edited = tmp_path / "edited"
    shutil.copytree(PROTOS / "tailor", edited / "tailor",
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    audit, ping = edited / "tailor" / "v1" / "audit.proto", edited / "tailor" / "v1" / "diagnostics.proto"
    audit.write_text(audit.read_text().replace('"Tailor.V1"', '"Tailor.Audit"'))
    ping.write_text("".join(line for line in ping.read_text().splitlines(keepends=True)
                            if not line.startswith("option go_package")))
    problems = options_problems(edited, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["tailor/v1/audit.proto", "tailor/v1/diagnostics.proto"]
    assert "Tailor.Audit" in problems[0] and "go_package" not in problems[1].split(" should be ")[0]
