"""The Makefile's build steps, run by the real `make` in a copy of the Makefile whose venv python
records its calls instead of running them: what a second `make build` (every `make serve`) runs."""
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")

RECORDER = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../../calls.log"
"""


def _make_build(tree) -> list[str]:
    """The venv python's calls of one `make build` in `tree`."""
    log = tree / "calls.log"
    log.write_text("")
    subprocess.run(["make", "-s", "build"], cwd=tree, check=True, capture_output=True, timeout=60)
    return log.read_text().splitlines()


def test_a_second_build_does_not_reinstall_the_project(tmp_path):
    """The editable install compiles every kernel again in a fresh temp dir (76 s of CPU), and
    `make serve` ran it at each start; now only when the venv or pyproject/setup.py changed."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("requirements.lock", "pyproject.toml", "setup.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(RECORDER)
    python.chmod(0o755)
    editable = "-m pip install -q --no-build-isolation --no-deps -e ."
    first = _make_build(tmp_path)
    assert editable in first and "setup.py -q build_ext --inplace" in first
    again = _make_build(tmp_path)
    assert editable not in again
    assert "setup.py -q build_ext --inplace" in again  # a changed .pyx is still compiled
    later = os.stat(tmp_path / ".venv" / ".editable").st_mtime + 10
    os.utime(tmp_path / "setup.py", (later, later))
    assert editable in _make_build(tmp_path)
