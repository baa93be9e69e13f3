"""An audit dir the server cannot write is refused at start, in one line naming it, as the
other directories it cannot write are: the audit log is written only when calls come, so the
server served, and each audited call then logged an error. A real `python -m server`."""
import os
import re

import pytest

from tests.conftest import free_port

from .test_server_cli import serve_fails


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs, where no file is made")
@pytest.mark.parametrize("workers", [1, 2])
def test_an_audit_dir_that_cannot_be_written_is_refused_at_start(tmp_path, workers):
    """With --workers 2 each worker refused it in a log line of its own, and the start ended
    (exit 2) without the one `error:` line: the parent checks it before any worker starts."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "audit").symlink_to("/sys/kernel")  # EACCES (EROFS where /sys is read-only)
    port = str(free_port()) if workers > 1 else "0"
    line = serve_fails(tmp_path, "--port", port, "--workers", str(workers), "--data-dir", str(data))
    assert re.fullmatch(rf"error: data_dir \(--data-dir, TAILOR_DATA_DIR\): cannot use "
                        rf"{re.escape(str(data / 'audit'))}: .+", line), line
