"""Latency against load: p50 and p99 of each RPC against the QPS each run achieved.

Drawn from the benches' `loadtests.measure.Measurement` rows (no new measuring). One line per
series (an RPC, or an RPC on one catalog), solid for p50 and dashed for p99, through its
fixed-rate runs sorted by achieved QPS; its closed-loop (max) runs are hollow markers.
matplotlib is the ``bench`` extra's; `loadtests.measure.write_latency_plot` imports this module
only when a bench is asked for ``--plot``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

__all__ = ["SIZE", "DPI", "open_loop", "points", "latency_figure", "save"]

SIZE = (8.0, 4.5)   # inches; at DPI the PNG is 800 x 450 pixels
DPI = 100


def open_loop(m) -> bool:
    """Was ``m`` a fixed-rate run (its latency answers "at this load") - as `print_table` tells."""
    return bool(m.load.sched_p99_ms)


def points(rows) -> tuple[list[float], list[float], list[float]]:
    """(QPS, p50 ms, p99 ms) of the runs in ``rows`` that completed calls, by ascending QPS."""
    done = sorted((m.load.qps, m.load.p50_ms, m.load.p99_ms) for m in rows if m.load.calls)
    return [d[0] for d in done], [d[1] for d in done], [d[2] for d in done]


def latency_figure(series: dict[str, list], title: str = "Latency vs load"):
    """The figure: for each series, its fixed-rate runs' p50 (solid) and p99 (dashed) against
    QPS as lines, and its closed-loop (max throughput) runs as hollow markers of the same colour
    (their latency is set by the in-flight calls, not by an arrival rate). Log latency axis."""
    fig, ax = plt.subplots(figsize=SIZE)
    colors = plt.get_cmap("tab10").colors
    for i, (name, rows) in enumerate(series.items()):
        color = colors[i % len(colors)]
        qps, p50, p99 = points([m for m in rows if open_loop(m)])
        ax.plot(qps, p50, marker="o", color=color, label=f"{name} p50")
        ax.plot(qps, p99, marker="^", linestyle="--", color=color, label=f"{name} p99")
        qps, p50, p99 = points([m for m in rows if not open_loop(m)])
        ax.scatter(qps + qps, p50 + p99, s=60, facecolors="none", edgecolors=color,
                   label=f"{name} max, closed loop (p50, p99)" if qps else None)
    ax.set_xlabel("achieved QPS")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(series: dict[str, list], path: str | Path, title: str = "Latency vs load") -> Path:
    """Write `latency_figure` as a PNG to ``path``."""
    fig = latency_figure(series, title)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
    return Path(path)
