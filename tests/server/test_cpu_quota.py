"""The CPUs a start counts before it warns of more workers than CPUs: the affinity, and at most
a container's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
read from a fake cgroup directory (`workers._cpus`'s seam), not this host's."""
import os

import pytest

from server.workers import _cpus

AFFINITY = len(os.sched_getaffinity(0))


def cgroup(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "100000 100000\n"}, 1),                    # v2: --cpus 1
    ({"cpu.max": "150000 100000\n"}, 2),                    # v2: 1.5 CPUs, rounded up
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
])
def test_a_cpu_quota_bounds_the_cpus_counted(tmp_path, files, quota):
    assert _cpus(cgroup(tmp_path, files)) == min(AFFINITY, quota)


@pytest.mark.parametrize("files", [
    {"cpu.max": "max 100000\n"},
    {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
    {},
])
def test_no_quota_counts_the_affinity(tmp_path, files):
    assert _cpus(cgroup(tmp_path, files)) == AFFINITY
