"""``report.html``: a training run's manifest drawn as pictures, with the same numbers as tables.

Everything comes from the bundle's manifest (``metrics`` of the evaluation fit,
``params.timings``); nothing is recomputed here. The pictures are PNGs embedded as base64, so the report is
one self-contained file. matplotlib (the ``train`` extra) is imported by the functions that draw,
with the Agg backend, so importing this module needs no display and no matplotlib.
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from training.evaluate import NOTHING_MEASURED, eval_units, measured
from training.segments import NEW_USER_DAYS

__all__ = ["METHODS", "HEADLINE", "pyplot", "figure_png", "metrics_chart", "curves_chart",
           "coverage_chart", "timings_chart", "table_html", "render", "write_report"]

METHODS = ("model", "retrieval", "popularity")
HEADLINE = ("recall@10", "ndcg@10", "map@10")
COLORS = {"model": "#1f77b4", "retrieval": "#ff7f0e", "popularity": "#7f7f7f"}
SIZE = (7.0, 3.6)   # inches; at DPI the PNGs are 700 x 360 pixels
DPI = 100


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (then closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    pyplot().close(fig)
    return buf.getvalue()


def _methods(metrics: dict) -> list[str]:
    return [m for m in METHODS if isinstance(metrics.get(m), dict)]


def metrics_chart(metrics: dict) -> bytes:
    """Grouped bars: each headline metric at k = 10 for the model and its baselines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    methods = _methods(metrics)
    width = 0.8 / max(len(methods), 1)
    for i, name in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(HEADLINE))]
        values = [metrics[name][key] for key in HEADLINE]
        bars = ax.bar(xs, values, width, label=name, color=COLORS[name])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(HEADLINE)), HEADLINE)
    ax.set_ylabel("score on the hold-out")
    ax.set_title(f"Model vs baselines ({metrics.get('n_eval_users', 0)} evaluated "
                 f"{eval_units(metrics)})")
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def curve_points(values: dict, metric: str) -> tuple[list[int], list[float]]:
    """The (k, value) pairs of ``metric@k`` present in one method's metrics, sorted by k."""
    found = sorted((int(m.group(1)), v) for key, v in values.items()
                   if (m := re.fullmatch(rf"{metric}@(\d+)", key)))
    return [k for k, _ in found], [v for _, v in found]


def curves_chart(metrics: dict) -> bytes:
    """Recall@k and NDCG@k against k, one line per method (two panels)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=SIZE)
    for ax, metric in zip(axes, ("recall", "ndcg")):
        for name in _methods(metrics):
            ks, values = curve_points(metrics[name], metric)
            ax.plot(ks, values, marker="o", label=name, color=COLORS[name])
        ax.set_xlabel("k")
        ax.set_title(f"{'Recall' if metric == 'recall' else 'NDCG'}@k")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return figure_png(fig)


def coverage_chart(metrics: dict) -> bytes:
    """Catalog coverage (distinct recommended items / catalog) of each method's top 10."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    methods = _methods(metrics)
    bars = ax.barh(methods, [metrics[m]["coverage"] for m in methods],
                   color=[COLORS[m] for m in methods])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of the catalog recommended to someone (top 10)")
    ax.set_title("Item coverage")
    fig.tight_layout()
    return figure_png(fig)


def timings_chart(timings: dict) -> bytes:
    """Wall seconds per training stage (horizontal bars; the totals, wall and CPU, in the title)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    stages = [k for k in timings if k != "total_s" and not k.endswith("_cpu_s")]
    bars = ax.barh([s.removesuffix("_s") for s in stages], [timings[s] for s in stages],
                   color="#2ca02c")
    ax.bar_label(bars, fmt="%.1f s", fontsize=8)
    ax.margins(x=0.12)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(f"Training timings (total {timings.get('total_s', 0)} s, "
                 f"CPU {timings.get('total_cpu_s', '?')} s)")
    fig.tight_layout()
    return figure_png(fig)


def table_html(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats with 4 decimals (the ``training train`` table's precision)."""
    def cell(v, tag="td"):
        text = f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
        return f"<{tag}>{text}</{tag}>"
    head = "<tr>" + "".join(cell(h, "th") for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _metrics_table(metrics: dict) -> str:
    methods = _methods(metrics)
    keys = sorted({k for m in methods for k in metrics[m]},
                  key=lambda k: (k.split("@")[0], int(k.split("@")[1]) if "@" in k else 0))
    return table_html(["method", *keys],
                      [[m, *(float(metrics[m][k]) for k in keys)] for m in methods])


def _segments_table(metrics: dict) -> str:
    """NDCG@10 and recall@10 per user segment (new/returning, activity) and method."""
    segments = metrics.get("segments") or {}
    methods = [m for m in METHODS if any(m in v for v in segments.values())]
    header = ["segment", "users", *(f"{m} {k}" for m in methods for k in ("ndcg@10", "recall@10"))]
    rows = [[name, int(v["n_users"]), *(float(v[m][k]) if v["n_users"] else "-"   # not 0
                                       for m in methods for k in ("ndcg@10", "recall@10"))]
            for name, v in segments.items()]
    return table_html(header, rows)


def _img(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<h2>{html.escape(title)}</h2>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">')


def render(manifest: dict) -> str:
    """The whole report page for one bundle's manifest."""
    metrics, timings = manifest["metrics"], manifest.get("params", {}).get("timings", {})
    version = html.escape(str(manifest.get("version", "")))
    parts = [f"<h1>Training report: bundle {version}</h1>",
             f"<p>Metrics of the {html.escape(str(manifest.get('metrics_fit', 'evaluation')))} "
             f"fit on the per-user temporal hold-out, "
             f"{metrics.get('n_eval_users', 0)} {eval_units(metrics)}.</p>"]
    if measured(metrics):
        parts += [_img("Model vs baselines", metrics_chart(metrics)),
                  _img("Recall@k and NDCG@k", curves_chart(metrics)),
                  _img("Item coverage", coverage_chart(metrics)),
                  "<h2>Metrics</h2>", _metrics_table(metrics)]
    else:
        parts.append(f"<p>{html.escape(NOTHING_MEASURED)}.</p>")
    if metrics.get("segments"):
        parts += ["<h2>Metrics by user segment</h2>",
                  f"<p>New users: first training event less than {NEW_USER_DAYS:g} days before "
                  "the cutoff; activity: training rows per user.</p>", _segments_table(metrics)]
    if timings:
        parts += [_img("Training timings", timings_chart(timings)), "<h2>Timings</h2>",
                  table_html(["stage", "seconds"], [[k, float(v)] for k, v in timings.items()])]
    style = ("body{font-family:sans-serif;max-width:760px;margin:auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
             "td{text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Tailor {version}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(manifest: dict, path: str | Path) -> Path:
    """Write ``render(manifest)`` to ``path``; returns it."""
    path = Path(path)
    path.write_text(render(manifest), encoding="utf-8")
    return path
