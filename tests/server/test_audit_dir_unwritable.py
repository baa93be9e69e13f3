"""An audit dir the server cannot write is refused at start, in one line naming it, as the
other directories it cannot write are: the audit log is written only when calls come, so the
server served, and each audited call then logged an error. A real `python -m server`."""
import os
import re

import pytest

from .test_server_cli import serve_fails


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs, where no file is made")
def test_an_audit_dir_that_cannot_be_written_is_refused_at_start(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "audit").symlink_to("/sys/kernel")  # EACCES (EROFS where /sys is read-only)
    line = serve_fails(tmp_path, "--port", "0", "--data-dir", str(data))
    assert re.fullmatch(rf"error: data_dir \(--data-dir, TAILOR_DATA_DIR\): cannot use "
                        rf"{re.escape(str(data / 'audit'))}: .+", line), line
