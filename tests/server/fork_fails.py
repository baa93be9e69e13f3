"""Preloaded by a test's zygote (`test_writer_process`): its forks fail as they do at a process
limit (EAGAIN), which a test run as root (not bound by RLIMIT_NPROC) cannot otherwise provoke."""
import errno
import os


def _no_fork() -> int:
    raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


os.fork = _no_fork
