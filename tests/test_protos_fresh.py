"""The committed stubs are exactly what protoc generates from the committed protos."""
import shutil

from protos.generate import generate_protos
from tests.conftest import ROOT


def test_generated_stubs_match_the_protos(tmp_path):
    src = ROOT / "protos"
    shutil.copytree(src / "tailor", tmp_path / "tailor", ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    generated = generate_protos(tmp_path)
    assert generated, "protoc generated nothing"
    for path in generated:
        rel = path.relative_to(tmp_path)
        assert (src / rel).read_text() == path.read_text(), f"{rel} is stale: run python setup.py build_protos"
