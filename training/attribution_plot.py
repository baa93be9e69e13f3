"""``attribute --plot``: credit per channel under each attribution model, side by side.

The credits are the conversions each model gives each channel (`kernels.attribution.attribute`
with the command's options); the picture is grouped bars, one group per channel and one bar per
model, so where the models agree and where they differ shows at a glance.
"""
from __future__ import annotations

import math
from pathlib import Path

from kernels.attribution import MODELS, BudgetExceeded, Paths, attribute
from training.attribute import deadline, over_budget
from training.report import figure_png, pyplot

__all__ = ["all_credits", "credits_chart", "write_plot"]

SIZE = (9.0, 4.5)   # inches; at training.report.DPI the PNG is 900 x 450 pixels


def all_credits(paths: Paths, seconds: float = math.inf,
                **options) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Conversions per channel of every model in MODELS, and why any model could not run.

    ``options`` are `attribute`'s keyword arguments (order, half_life, ...); a model that rejects
    the paths (time_decay without timestamps) is left out with its error message, and so is one
    that computes past ``seconds`` (each model has that bound).
    """
    credits, skipped = {}, {}
    for model in MODELS:
        try:
            res = attribute(paths, model, deadline=deadline(seconds), **options)
        except ValueError as err:
            skipped[model] = str(err)
            continue
        except BudgetExceeded:
            skipped[model] = over_budget(seconds)
            continue
        credits[model] = {c: float(v) for c, v in zip(res.channels, res.conversions)}
    return credits, skipped


def credits_chart(credits: dict[str, dict[str, float]], total: float) -> bytes:
    """Grouped bars: channels on x (by mean credit, largest first), one bar per model."""
    plt = pyplot()
    channels = sorted({c for per in credits.values() for c in per},
                      key=lambda c: -sum(per.get(c, 0.0) for per in credits.values()))
    fig, ax = plt.subplots(figsize=SIZE)
    width = 0.8 / max(len(credits), 1)
    colors = plt.get_cmap("tab10").colors
    for i, (model, per) in enumerate(credits.items()):
        xs = [j + (i - (len(credits) - 1) / 2) * width for j in range(len(channels))]
        ax.bar(xs, [per.get(c, 0.0) for c in channels], width, label=model,
               color=colors[i % len(colors)])
    ax.set_xticks(range(len(channels)), channels)
    ax.set_ylabel("conversions credited")
    ax.set_title(f"Credit per channel by attribution model ({total:g} conversions)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def write_plot(paths: Paths, out: str | Path, **options) -> dict[str, str]:
    """Draw every model's credits for ``paths`` to the PNG ``out``; returns the skipped models."""
    credits, skipped = all_credits(paths, **options)
    if not credits:
        raise ValueError("no attribution model could run on these paths")
    Path(out).write_bytes(credits_chart(credits, float(paths.conversions.sum())))
    return skipped
