"""The phone numbering plans (`server.contact.trunks`, phonenumberslite) load at a worker's
start, in a thread before it serves, not at the first number it reads on its event loop."""
import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import asyncio, json, sys, time
from pathlib import Path
from tests.conftest import server_settings
from server.app import TailorServer

async def main():
    server = TailorServer(server_settings(Path(sys.argv[1]), Path(sys.argv[2])))
    await server.start()
    loaded = "phonenumbers" in sys.modules
    from server.contact.addresses import normalize
    start = time.perf_counter()
    normalize("phone", "+44 07700 900123", 254)
    first = time.perf_counter() - start
    await server.stop(grace=0.1)
    print(json.dumps([loaded, first]))

asyncio.run(main())
"""


def test_a_started_server_has_loaded_the_plans_before_its_first_number(tmp_path, demo_bundle):
    """The first number a worker parsed imported the library and its plans on the event loop
    (60-150 ms on 2 busy cores, every other call of the worker waiting); a fresh process, as
    a worker is, has them once it has started, and its first number costs what any does."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(demo_bundle)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, first = json.loads(out.stdout.splitlines()[-1])
    print(f"first number after start: {first * 1e3:.2f} ms")
    assert loaded


WITHOUT_LIBRARY = """
import runpy, sys

class Missing:
    \"\"\"An import hook standing in for an environment without phonenumberslite.\"\"\"
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "phonenumbers":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Missing())
sys.argv = ["server", *sys.argv[1:]]
runpy.run_module("server", run_name="__main__", alter_sys=True)
"""


def test_a_server_without_the_plans_library_refuses_to_start_naming_what_to_install(
        tmp_path, demo_bundle):
    """Without `phonenumbers` (the phonenumberslite package) a worker cannot load the plans at
    its start: `python -m server` exits 2 with one `error:` line naming the step and the
    package to install. Before, a traceback ending in ModuleNotFoundError named neither."""
    out = subprocess.run([sys.executable, "-c", WITHOUT_LIBRARY, "--port", "0", "--data-dir",
                          str(tmp_path / "data"), "--bundle", str(demo_bundle), "--workers", "1",
                          "--metrics-port", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert (out.returncode, len(errors)) == (2, 1), out.stderr[-3000:]
    assert "phone numbering plans" in errors[0] and "No module named 'phonenumbers'" in errors[0]
    assert "pip install 'phonenumberslite" in errors[0]
    assert "Traceback" not in out.stderr
