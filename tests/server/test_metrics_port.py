"""A metrics port the server cannot bind ends the start in one line naming the flag to change."""
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port
from tests.server.test_server_cli import serve_fails


def test_a_metrics_host_that_does_not_resolve_names_the_flag(tmp_path):
    # 'Name or service not known' alone: the flag was --metrics-port's hint for a port in use only
    line = serve_fails(tmp_path, "--port", "0", "--metrics-port", str(free_port()), "--metrics-host",
                       "nosuch.invalid", "--insecure", "--data-dir", str(tmp_path / "d"))
    assert "could not serve metrics on nosuch.invalid:" in line
    assert "--metrics-host (TAILOR_METRICS_HOST)" in line, line


def _unprivileged() -> bool:
    """`unshare -U` runs a process with no privilege in the machine's network namespace (as
    root here: a test of a port it may not bind)."""
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-U", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unprivileged(), reason="needs `unshare -U`")
def test_a_metrics_port_it_may_not_bind_names_the_flag(tmp_path):
    # port 80 without CAP_NET_BIND_SERVICE: 'Permission denied' alone
    proc = subprocess.run(["unshare", "-U", sys.executable, "-m", "server", "--port", "0",
                           "--metrics-port", "80", "--data-dir", str(tmp_path / "d")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert "could not serve metrics on 127.0.0.1:80: Permission denied" in line
    assert "give a higher --metrics-port (TAILOR_METRICS_PORT)" in line, line
