"""A backup's `--out` names a new file or a regular one (server/backup/copying.py): the archive is
written beside the name and renamed over it, so whatever else was there was replaced by a
regular file, and the backup said it was done (walked, as root: `backup --out /dev/stdout`
replaced the /dev/stdout symlink with the archive; a FIFO a reader waited on became a file)."""
import os

import pytest

from server.backup import backup
from server.errors import FailedPrecondition
from server.store import Store


@pytest.fixture
def data_dir(tmp_path):
    Store(tmp_path / "data" / "store").close()
    return tmp_path / "data"


def test_a_pipe_as_out_is_refused_and_left_alone(data_dir, tmp_path):
    out = tmp_path / "pipe"
    os.mkfifo(out)
    with pytest.raises(FailedPrecondition, match="not a regular file"):
        backup(data_dir, out)
    assert out.is_fifo()


def test_a_symlink_as_out_is_refused_and_left_alone(data_dir, tmp_path):
    target = tmp_path / "target.tar"
    target.write_bytes(b"kept")
    out = tmp_path / "latest.tar"
    out.symlink_to(target)
    with pytest.raises(FailedPrecondition, match="not a regular file"):
        backup(data_dir, out)
    assert out.is_symlink() and target.read_bytes() == b"kept"


def test_an_existing_regular_file_is_still_replaced(data_dir, tmp_path):
    out = tmp_path / "b.tar"
    out.write_bytes(b"an older backup")
    backup(data_dir, out)
    assert out.read_bytes()[:15] != b"an older backup" and out.stat().st_size > 1024
