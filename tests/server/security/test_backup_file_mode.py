"""A backup file is readable by its writer's account only (server/backup/archive.py): it holds
the store (campaigns, the unsealed impressions, keyed hashes) and the data keys' pads
(`store/keyslots`, mode 0600 on disk): written with the umask's 0644, every user of the host
could copy the pads out of it."""
import os
import stat
import tarfile

import pytest

from server.backup import backup
from server.store import Store


@pytest.mark.parametrize("name", ["b.tar", "b.tar.gz"])
def test_a_backup_file_is_mode_0600_whatever_the_umask(tmp_path, name):
    Store(tmp_path / "data" / "store").close()
    out = tmp_path / name
    before = os.umask(0o022)
    try:
        backup(tmp_path / "data", out)
    finally:
        os.umask(before)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out, "r:*") as tar:  # still a backup, compressed as its name says
        assert "tailor-backup.json" in tar.getnames()
