"""Latency against load: p50 and p99 of each RPC against the QPS each run achieved.

Drawn from the benches' `loadtests.measure.Measurement` rows (no new measuring). One line per
series (an RPC, or an RPC on one catalog), solid for p50 and dashed for p99, points sorted by
achieved QPS. matplotlib is the ``bench`` extra's; `loadtests.measure.write_latency_plot` imports
this module only when a bench is asked for ``--plot``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

__all__ = ["SIZE", "DPI", "points", "latency_figure", "save"]

SIZE = (8.0, 4.5)   # inches; at DPI the PNG is 800 x 450 pixels
DPI = 100


def points(rows) -> tuple[list[float], list[float], list[float]]:
    """(QPS, p50 ms, p99 ms) of the runs in ``rows`` that completed calls, by ascending QPS."""
    done = sorted((m.load.qps, m.load.p50_ms, m.load.p99_ms) for m in rows if m.load.calls)
    return [d[0] for d in done], [d[1] for d in done], [d[2] for d in done]


def latency_figure(series: dict[str, list], title: str = "Latency vs load"):
    """The figure: for each series name, its runs' p50 (solid) and p99 (dashed) against QPS."""
    fig, ax = plt.subplots(figsize=SIZE)
    colors = plt.get_cmap("tab10").colors
    for i, (name, rows) in enumerate(series.items()):
        qps, p50, p99 = points(rows)
        color = colors[i % len(colors)]
        ax.plot(qps, p50, marker="o", color=color, label=f"{name} p50")
        ax.plot(qps, p99, marker="^", linestyle="--", color=color, label=f"{name} p99")
    ax.set_xlabel("achieved QPS")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(series: dict[str, list], path: str | Path, title: str = "Latency vs load") -> Path:
    """Write `latency_figure` as a PNG to ``path``."""
    fig = latency_figure(series, title)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
    return Path(path)
