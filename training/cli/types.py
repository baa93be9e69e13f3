"""Argument types of the ``python -m training`` subcommands: counts and fractions checked by
argparse, so that a bad flag is one ``error: argument ...`` line (exit 2), not a traceback from
deep in a job."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = ["count", "positive_int", "resamples", "open_fraction", "share", "window_hours",
           "positive_number", "nonnegative_number", "recall_target", "tolerance",
           "canary_percent", "finite_number", "history_len", "factors", "timeout_seconds",
           "out_dir", "out_file"]


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 0."""
    return _whole(text, 0)


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _whole(text, 1)


def window_hours(text: str) -> int:
    """``evaluate-timing``'s send window in hours from 00:00 UTC: a whole number from the hour
    after the fixed policy's send (`training.timing.TimingConfig.fixed_utc_hour`, 09:00: 10)
    to `kernels.send_time.MAX_SLOTS` (168), refused here rather than after the simulation."""
    from kernels.send_time import MAX_SLOTS
    from training.timing import TimingConfig

    least = TimingConfig.fixed_utc_hour + 1
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if not least <= value <= MAX_SLOTS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number in {least}..{MAX_SLOTS} (the window must hold the fixed "
            f"policy's {least - 1:02d}:00 UTC send), got {text!r}")
    return value


def resamples(text: str) -> int:
    """Bootstrap resamples: a whole number >= `training.ope.MIN_BOOT`."""
    from training.ope import MIN_BOOT
    return _whole(text, MIN_BOOT)


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def share(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _number(text: str, least: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < least or (strict and value == least):
        raise argparse.ArgumentTypeError(
            f"expected a finite number {'>' if strict else '>='} {least:g}, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0."""
    return _number(text, 0.0, strict=True)


def nonnegative_number(text: str) -> float:
    """A finite number >= 0."""
    return _number(text, 0.0, strict=False)


def recall_target(text: str) -> float:
    """A share of the true top-k: a number in (0, 1]."""
    value = _number(text, 0.0, strict=True)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def tolerance(text: str) -> float:
    """A fraction that may be 0: a number in [0, 1)."""
    value = _number(text, 0.0, strict=False)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def finite_number(text: str) -> float:
    """Any finite number (NaN compares false with everything: a check against it never holds)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def canary_percent(text: str) -> float:
    """A canary's share of users in percent, as the server takes it: 0.01..99.99 (0 would be a
    plain push to every user, 100 is refused by the server)."""
    value = _number(text, 0.01, strict=False)
    if value > 99.99:
        raise argparse.ArgumentTypeError(f"expected a percentage in 0.01..99.99, got {text!r}")
    return value


def _at_most(text: str, most: int, what: str) -> int:
    value = _whole(text, 1)
    if value > most:
        raise argparse.ArgumentTypeError(f"expected a whole number in 1..{most} ({what}), got "
                                         f"{text!r}")
    return value


def history_len(text: str) -> int:
    """Items per user history: 1..`contract.MAX_HISTORY_LEN` (the server refuses a longer one)."""
    from contract.bundle import MAX_HISTORY_LEN
    return _at_most(text, MAX_HISTORY_LEN, "the server refuses a longer history")


def factors(text: str) -> int:
    """The embedding dimension: 1..`contract.MAX_DIM` (the server refuses a larger one)."""
    from contract.bundle import MAX_DIM
    return _at_most(text, MAX_DIM, "the server refuses a larger dimension")


def timeout_seconds(text: str) -> float:
    """A server call's deadline in seconds: a finite number > 0, at most
    `clients.client.MAX_TIMEOUT` (as `python -m clients` takes it)."""
    from clients.client import MAX_TIMEOUT  # not at import: the clients load grpc

    value = _number(text, 0.0, strict=True)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, {MAX_TIMEOUT}] (30 days), "
                                         f"got {text!r}")
    return value


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` or in the directories a job would create under
    its nearest existing ancestor, or None."""
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(probe)!r} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{str(probe)!r} is not writable"
    return None


def out_dir(text: str) -> Path:
    """A directory a job writes into at its end (created with its parents if need be),
    checked now: a run is not lost on a path it cannot write."""
    problem = _unwritable(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write under {text!r}: {problem}")
    return Path(text)


def out_file(text: str) -> Path:
    """A file a job writes at its end, in a directory that exists, checked now."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, expected a file name")
    parent = path.parent
    problem = (f"no directory {str(parent)!r}" if not parent.is_dir() else _unwritable(parent))
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {problem}")
    return path
