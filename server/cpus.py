"""How many CPUs this process may use: what `serve` compares `--workers` with before it warns.

Its affinity (a container's cpuset, `taskset`), and at most its cgroup's CPU quota rounded up
(v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), read from the process's own group
and each parent: a container's `--cpus 2` on a 64-CPU host leaves the affinity at 64, and a
systemd unit's `CPUQuota=` sits in a nested group, not at the root.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cpus"]


CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where the cgroup hierarchy is mounted: a container (its cgroup namespace) sees its own group
at the root, a host the whole tree."""
SELF_CGROUP = Path("/proc/self/cgroup")
"""Names this process's group (v2 `0::<path>`, v1 `<n>:cpu,cpuacct:<path>`) under the root."""


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """The CPUs this process may run on: its affinity (a container's cpuset, `taskset`), and at
    most its cgroup's CPU quota rounded up (a container's `--cpus 2` on a 64-CPU host leaves the
    affinity at 64; before, the quota was not counted). The group is the one `self_cgroup`
    names, or a parent of it: on a host the root's file holds no quota, and a systemd unit's
    `CPUQuota=` was not counted."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    v2, v1 = _own_groups(self_cgroup)
    quotas = [_quota_cpus(group) for group in _up_from(cgroup_root, v2)]
    quotas += [_quota_v1(group) for group in _up_from(cgroup_root / "cpu", v1)]
    return min([cpus, *(quota for quota in quotas if quota)])


def _own_groups(self_cgroup: Path) -> tuple[str, str]:
    """This process's group in the v2 hierarchy and in v1's cpu controller, as
    `/proc/self/cgroup` names them ("/": the root, also when it cannot be read)."""
    v2 = v1 = "/"
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if not controllers:
            v2 = path or "/"
        elif "cpu" in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _up_from(mount: Path, group: str) -> list[Path]:
    """The dirs of `group` and of its parents under `mount` (each one's quota bounds it); the
    mount alone when it does not hold that path: a container that mounts its own group at the
    root without a cgroup namespace (v1 Docker) names the host's path."""
    relative = Path(group.strip("/"))
    if not (mount / relative).is_dir():
        return [mount]
    return [mount / relative, *(mount / parent for parent in relative.parents)]


def _quota_cpus(group: Path) -> int | None:
    """The CPUs cgroup v2's `cpu.max` of `group` allows (`<quota> <period>`, or `max ...`:
    none), rounded up; None without a quota or a file to read."""
    try:
        quota, period = (group / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return _rounded_up(quota, period)


def _quota_v1(group: Path) -> int | None:
    """The same from cgroup v1's `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`."""
    try:
        quota = (group / "cpu.cfs_quota_us").read_text().strip()
        period = (group / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _rounded_up(quota, period)


def _rounded_up(quota: str, period: str) -> int | None:
    """`quota` / `period` CPUs rounded up (at least 1); None for `max`, -1 or a bad value."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))
