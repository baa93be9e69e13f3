"""Dependencies point one way (docs: ARCHITECTURE): each package imports only the packages of
ours it is allowed to, counting imports inside functions too."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"clients", "contract", "kernels", "loadtests", "protos", "server", "tests", "training"}
ALLOWED = {
    "kernels": set(),
    "contract": set(),
    # training talks to a running server only through the client and its stubs (push, export)
    "training": {"kernels", "contract", "clients", "protos"},
    "server": {"kernels", "contract", "protos"},
    "clients": {"protos", "contract"},  # contract.hosts: the loopback rule the server keys on
}


def imported(path: Path) -> set[str]:
    """Top-level packages of ours that `path` imports, anywhere in the module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    wrong = {str(f.relative_to(ROOT)): sorted(imported(f) - ALLOWED[package] - {package})
             for f in sorted((ROOT / package).rglob("*.py"))}
    assert {f: bad for f, bad in wrong.items() if bad} == {}


def test_imported_sees_lazy_and_dotted_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\nimport server.app as a\n\n"
                      "def f():\n    from training import timing\n    from . import sibling\n")
    assert imported(module) == {"server", "training"}
