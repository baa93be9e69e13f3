"""pyproject: console scripts name real entry functions; the runtime dependency set is exactly
what server/, clients/, kernels/, protos/ and contract/ import (extras are never needed to serve)."""
import ast
import importlib
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.conftest import ROOT, loaded_modules

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_PACKAGES = ("server", "clients", "kernels", "protos", "contract")

IMPORT_ALL = """
import importlib, json, pkgutil, sys
for name in sys.argv[2:]:
    sys.modules[name] = None  # an extra's module: importing it fails
for pkg in sys.argv[1].split(","):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if ".bench" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _modules_of(requirements) -> dict[str, set[str]]:
    """Import names of each distribution ({dist: {top-level modules}})."""
    owners: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            owners.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    out = {}
    for req in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group().lower().replace("_", "-")
        assert name in owners, f"{name} is declared but not installed"
        out[name] = {m for m in owners[name] if not m.startswith("_")}
    return out


def _imported_in_source() -> set[str]:
    """Top-level modules named by any absolute import statement of the runtime packages, inside
    functions too (scipy, for one, is imported where the statistics are computed, not at start)."""
    names = set()
    for pkg in RUNTIME_PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def test_console_scripts_name_real_entry_functions():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"tailor-server", "tailor-train", "tailor"}
    for target in scripts.values():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), target


def test_runtime_dependencies_are_what_the_server_and_client_import():
    runtime = _modules_of(PYPROJECT["project"]["dependencies"])
    extras = _modules_of(r for reqs in PYPROJECT["project"]["optional-dependencies"].values()
                         for r in reqs)
    runtime_modules = set().union(*runtime.values())
    blocked = sorted(set().union(*extras.values()) - runtime_modules)
    assert {"locust", "Cython", "grpc_tools"} <= set(blocked)
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, ",".join(RUNTIME_PACKAGES), *blocked],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"an extra is imported at run time:\n{proc.stderr[-3000:]}"
    imported = set(json.loads(proc.stdout)) | _imported_in_source()
    unused = [dist for dist, modules in runtime.items() if not modules & imported]
    assert not unused, f"declared runtime dependencies nothing imports: {unused}"


def test_the_server_loads_the_http_stack_and_dkim_only_when_configured():
    """`python -m server` with the defaults serves no public port, webhook or DKIM key: it
    imports neither aiohttp nor dkimpy (a third of a second of every start)."""
    assert loaded_modules("server.app", ("aiohttp", "dkim", "dns")) == []


def test_the_parent_of_workers_does_not_load_the_server():
    """The parent of `--workers N` (`server.workers`, `server.supervisor`) never serves: its
    workers import `server.app` (the whole server, 1.2-1.4 s of CPU), and it imported it too
    at every start, before spawning them."""
    assert loaded_modules("server.__main__, server.workers, server.supervisor",
                          ("server.app", "onnxruntime", "faiss")) == []


def test_the_server_command_loads_no_settings_before_it_needs_them():
    """`python -m server --help`, or a usage error, parses flags only: the settings (pydantic,
    0.3-0.4 s of CPU) load when a command reads them (`_command_settings`)."""
    assert loaded_modules("server.__main__ as m; m.build_parser()", ("server.config", "pydantic")) == []


def test_importing_the_server_does_not_load_the_numbering_plans():
    """phonenumbers (the trunk prefixes of `server.contact.trunks`) costs 30-120 ms and
    1.5-2.6 MB to import: importing the server does not pay it (a CLI command, a writer child);
    a server's start loads it in a thread before serving (tests/server/test_phone_plans.py),
    and a process that only normalizes a number loads it then."""
    assert loaded_modules("server.app", ("phonenumbers",)) == []
    assert loaded_modules("server.contact.addresses as a; a.normalize('phone', '+44 07700 900123', "
                          "20)", ("phonenumbers",)) == ["phonenumbers"]
