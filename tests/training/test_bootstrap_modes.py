"""`python -m training bootstrap --data-dir D` writes into a server's data dir (the demo world's
events, a bundle with users.npz): the server's account's alone, as the server's own files
(`server.files`), whatever the umask."""
import os
import stat

from tests.conftest import run_module


def test_bootstrap_writes_private_files(tmp_path):
    """Before: demo/, bundles/ and the bundle 0755, their files 0644 under umask 022."""
    old = os.umask(0o022)  # the command inherits it
    try:
        run_module("training", "bootstrap", "--data-dir", str(tmp_path / "data"), "--users", "200",
                   "--items", "80")
    finally:
        os.umask(old)
    written = sorted((tmp_path / "data").rglob("*"))
    assert any(p.name == "users.npz" for p in written)
    assert [f"{stat.S_IMODE(p.stat().st_mode):04o} {p}" for p in written
            if stat.S_IMODE(p.stat().st_mode) & 0o077] == []
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
