"""The CPUs a start counts before it warns of more workers than CPUs: the affinity, and at most
a container's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
read from a fake cgroup directory (`cpus.usable_cpus`' seam), not this host's."""
import os

import pytest

from server.cpus import usable_cpus as _cpus

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


@pytest.mark.skipif(AFFINITY < 2, reason="a quota of 1 CPU must be below the affinity")
@pytest.mark.parametrize("own, files", [
    ("0::/system.slice/tailor.service\n",  # v2 host, a systemd unit's CPUQuota=50%
     {"system.slice/tailor.service/cpu.max": "50000 100000\n", "system.slice/cpu.max": "max 100000\n"}),
    ("0::/kubepods/pod1/c1\n",  # v2, the quota on a parent of the process's group
     {"kubepods/pod1/cpu.max": "100000 100000\n", "kubepods/pod1/c1/cpu.max": "max 100000\n"}),
    ("4:cpu,cpuacct:/system.slice/tailor.service\n0::/\n",  # v1 host
     {"cpu/system.slice/tailor.service/cpu.cfs_quota_us": "50000\n",
      "cpu/system.slice/tailor.service/cpu.cfs_period_us": "100000\n"}),
])
def test_the_quota_of_the_process_own_nested_group_counts(tmp_path, own, files):
    """/proc/self/cgroup names the process's group: on a host (no cgroup namespace), the root's
    file holds no quota, the group's or one of its parents' does."""
    (proc := tmp_path / "self-cgroup").write_text(own)
    assert _cpus(cgroup(tmp_path / "fs", files), proc) == 1


def test_a_group_the_mount_does_not_show_reads_the_root(tmp_path):
    """A container that mounts its own group at the root (cgroup v1 without a namespace):
    /proc/self/cgroup names a path the mount does not hold; the root's file is the group's."""
    (proc := tmp_path / "self-cgroup").write_text("4:cpu,cpuacct:/docker/abc\n")
    files = {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    assert _cpus(cgroup(tmp_path / "fs", files), proc) == 1
