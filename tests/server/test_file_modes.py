"""What a server and `python -m server`'s commands write is their account's alone: directories
0700, files 0600, under an umask of 022 (`server.files`). A data dir an older Tailor left open to
other accounts is warned about, not chmodded; one every user may write is refused."""
import os
import stat
import time
from pathlib import Path

import pytest

from clients import TailorClient
from tests.conftest import run_module


def _opened(root: Path) -> list[str]:
    """Every path under `root` (not `root` itself) with a group or other bit, with its mode."""
    return [f"{stat.S_IMODE(p.stat().st_mode):04o} {p}" for p in sorted(root.rglob("*"))
            if stat.S_IMODE(p.stat().st_mode) & 0o077]


@pytest.fixture(scope="module")
def walked(module_server_process, tmp_path_factory, demo_bundle):
    """One server, under umask 022, on a data dir an older Tailor left 0750: a bundle imported,
    events tracked, a campaign made, a backup taken, then restored into a new data dir.
    (tmp dir, the server's log)."""
    tmp = tmp_path_factory.mktemp("modes")
    (tmp / "data").mkdir()
    (tmp / "data").chmod(0o750)
    env = {"TAILOR_SECRETS_DIR": str(tmp / "secrets")}
    old = os.umask(0o022)  # the server and the commands inherit it
    try:
        served = module_server_process(tmp / "data", bundle=demo_bundle, env=env)
        with TailorClient(served.target, timeout=30) as client:
            t0 = time.time() - 3600
            client.track_batch([{"event_id": f"e{i}", "user_id": "ann", "type": "click",
                                 "item_id": str(i), "timestamp": t0 + i} for i in range(20)])
            client.recommend("ann", k=5, channel="web")
            client.create_campaign({"campaign_id": "spring", "policy": "gaussian_ts",
                                    "variants": [{"id": "red"}, {"id": "blue"}]})
        run_module("server", "backup", "--data-dir", str(tmp / "data"), "--out",
                   str(tmp / "backups" / "b.tar"), env={**os.environ, **env})
        log = served.stop()
        run_module("server", "restore", "--from", str(tmp / "backups" / "b.tar"), "--data-dir",
                   str(tmp / "restored"), env={**os.environ, **env})
    finally:
        os.umask(old)
    return tmp, log


def test_everything_written_is_private(walked):
    """Before: data.mdb, lock.mdb, tailor.lock, audit.tip and every bundle file 0644, store/,
    bundles/ and audit/ 0755 (in the restored data dir as well)."""
    tmp, _ = walked
    assert (tmp / "data" / "store" / "data.mdb").exists()
    assert list((tmp / "data" / "bundles").glob("*/users.npz"))
    for root in ("data", "restored", "backups", "secrets"):
        assert _opened(tmp / root) == [], root
    for root in ("restored", "backups", "secrets"):
        assert stat.S_IMODE((tmp / root).stat().st_mode) == 0o700, root


def test_open_data_dir_warned_not_changed(walked):
    """The operator's own directory keeps its mode; the start says, once, what to run."""
    tmp, log = walked
    data = tmp / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    warning = f"data dir {data}: other accounts may read it (mode 0750)"
    assert log.count(warning) == 1, log[-3000:]
    assert f"chmod -R go-rwx {data}" in log


def test_world_writable_data_dir_refused(tmp_path):
    """Anyone could put their own store or bundles in it: the start stops before writing any."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    out = run_module("server", "--port", "0", "--data-dir", str(data), check=False, timeout=60,
                     env={**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert out.returncode != 0
    assert f"refusing to start: data dir {data}: every user may write it (mode 0777)" in out.stderr
    assert f"chmod o-w {data}" in out.stderr
    assert list(data.iterdir()) == []


def test_data_dir_not_made_yet_in_an_open_directory_refused(tmp_path):
    """Before: nothing checked until the data dir was there, so the first start served (and made
    it in the open directory) and the next start refused it; now both refuse, before it is made."""
    from server.errors import FailedPrecondition
    from server.files import check_data_dir
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    data = shared / "tailor" / "data"
    with pytest.raises(FailedPrecondition, match=f"the directory {shared} above it: every user "
                                                 r"may write it \(mode 0777\).*chmod o-w"):
        check_data_dir(data)
    assert list(shared.iterdir()) == []
    shared.chmod(0o1777)  # sticky, as /tmp: no one may rename another's directory in it
    check_data_dir(data)


@pytest.mark.parametrize("made", [0, 1])
def test_the_refusal_of_a_data_dir_to_make_names_the_open_directory_as_what_it_is(tmp_path, made):
    """`shared` (0777) / `tailor` (0755, there or not) / `data` (not there): the refusal is of
    the data dir, so `shared` is a directory above it, not "its directory" (which the refusal
    said when `tailor` was there: it spoke of `tailor`'s directory). With `data`'s own
    directory open it is its directory. One test for both (`writable_by_all`'s loop)."""
    from server.errors import FailedPrecondition
    from server.files import check_data_dir
    shared = tmp_path / "shared"
    (shared / "tailor").mkdir(parents=True) if made else shared.mkdir()
    shared.chmod(0o777)
    data = shared / "tailor" / "data"
    with pytest.raises(FailedPrecondition) as err:
        check_data_dir(data)
    assert str(err.value).startswith(f"data dir {data}: the directory {shared} above it: every "
                                     "user may write it (mode 0777)"), str(err.value)
    assert str(err.value).endswith(f"chmod o-w {shared}")
    shared.chmod(0o755)
    (shared / "tailor").mkdir(exist_ok=True)
    (shared / "tailor").chmod(0o777)
    with pytest.raises(FailedPrecondition, match=f"data dir {data}: its directory "
                                                 f"{shared / 'tailor'}: every user may write it"):
        check_data_dir(data)
    (shared / "tailor").chmod(0o755)
