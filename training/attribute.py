"""`attribute` subcommand: multi-touch attribution of a path file.

    python -m training attribute FILE --model markov --order 2 \
        [--format channelattribution] [--json] [--plot credits.png] [--seconds 60]

``--plot FILE.png`` also draws every model's credit per channel side by side
(`training.attribution_plot`; matplotlib, the ``train`` extra), with the same options.

``--seconds`` bounds the computation as the server's Attribute RPC is bounded (its
`Limits.attribution_seconds` default, 5 s): past it the Markov model and sampled rate Shapley
stop, and the command exits 3 saying so (``--seconds inf``: no bound; with ``--plot``, each
model has the bound, and one past it is left out of the picture). ``--rank-cells`` bounds the
memory of ``--shapley-form ordered`` as the server does (`Limits.attribution_rank_cells`,
1,000,000 cells): past it the command exits 2 saying so.

Formats
-------
channelattribution
    ``path;total_conversions;total_conversion_value;total_null`` lines with ``" > "`` between
    channels (header optional, value and null columns optional, a fifth column refused).
tailor
    JSON Lines, one path per line: ``{"path": ["a", "b"] | "a > b", "conversions": 1,
    "value": 9.5, "nulls": 0, "timestamps": [t0, t1]}`` (timestamps in seconds; only
    ``path`` is required, conversions default to 1).
auto (default)
    tailor if the first non-blank character is ``{``, else channelattribution.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

from contract.attribution import ATTRIBUTION_RANK_CELLS, ATTRIBUTION_SECONDS
from kernels.attribution import (
    DAY,
    MODELS,
    BudgetExceeded,
    Paths,
    attribute,
    parse_channelattribution,
)
from training.cli.types import positive_int
from training.progress import progress
from training.readers import json_objects

__all__ = ["add_parser", "run", "read_paths"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``attribute`` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser("attribute", help="multi-touch attribution of a path file",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="path file ('-' for stdin)")
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--order", type=int, default=1, help="Markov order, 1..4 (default 1)")
    parser.add_argument("--format", default="auto", choices=("auto", "channelattribution",
                                                             "tailor"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--shapley-form", default="counts", choices=("counts", "rate",
                                                                      "ordered"))
    parser.add_argument("--samples", type=int, default=None,
                        help="permutations for sampled rate Shapley past the exact limit")
    parser.add_argument("--position-shares", type=float, nargs=2, default=(0.4, 0.4),
                        metavar=("FIRST", "LAST"))
    parser.add_argument("--half-life-days", type=float, default=7.0)
    parser.add_argument("--direct", default="direct", help="channel skipped by last_non_direct")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="also draw the credit per channel of every model to FILE.png")
    parser.add_argument("--python", action="store_true",
                        help="use the numpy/pure-Python reference instead of the kernels")
    parser.add_argument("--seconds", type=_seconds, default=ATTRIBUTION_SECONDS,
                        help="most seconds the attribution may compute, then exit 3 (default "
                             f"{ATTRIBUTION_SECONDS:g}, the server's; 'inf': no bound)")
    parser.add_argument("--rank-cells", type=positive_int, default=ATTRIBUTION_RANK_CELLS,
                        help="most credits by rank of --shapley-form ordered (channels x the "
                             "most distinct channels of one path; 16 bytes each), then exit 2 "
                             f"(default {ATTRIBUTION_RANK_CELLS:,}, the server's)")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def deadline(seconds: float) -> float | None:
    """The time.monotonic() deadline ``seconds`` from now (None for inf)."""
    return None if math.isinf(seconds) else time.monotonic() + seconds


def over_budget(seconds: float) -> str:
    """What to say when an attribution passed ``--seconds``."""
    return (f"the computation passed its budget of {seconds:g}s (--seconds; the server's "
            "Limits.attribution_seconds): raise --seconds, or use fewer paths or channels, or a "
            "lower Markov order")


def read_paths(file: Path, fmt: str = "auto") -> Paths:
    """Read a path file in the channelattribution or tailor (JSON Lines) format."""
    text = sys.stdin.read() if str(file) == "-" else Path(file).read_text()
    text = text.removeprefix("\ufeff")  # a UTF-8 export's byte order mark: no channel's name
    if fmt == "auto":
        fmt = "tailor" if text.lstrip().startswith("{") else "channelattribution"
    lines = text.splitlines()
    if fmt == "channelattribution":
        paths = parse_channelattribution(lines)
        _check_counts(paths, lines)
    else:
        paths = _tailor(lines)
    _check_channel_names(paths)
    return paths


def _check_counts(paths: Paths, lines: list[str]) -> None:
    """Refuse a negative or non-finite count of a channelattribution row, naming its line (the
    tailor format's rows are checked as they are read); `attribute` named "path 0", counted
    from 0 and past any header."""
    numbered = [i for i, line in enumerate(lines, 1) if line.strip()]
    numbered = numbered[len(numbered) - paths.n_paths:]  # without the header, if one was skipped
    for name in ("conversions", "value", "nulls"):
        column = getattr(paths, name)
        bad = np.flatnonzero(~((column >= 0) & np.isfinite(column)))  # NaN too
        if bad.size:
            raise ValueError(f"line {numbered[bad[0]]}: {name}: must be finite and >= 0, got "
                             f"{float(column[bad[0]])}")


def _check_channel_names(paths: Paths) -> None:
    """Refuse a blank touch ("a >  > b", a trailing ">"), which would take credit as a channel
    named ""; the server refuses it too."""
    if "" not in paths.channels:
        return
    blank = paths.channels.index("")
    row = int(np.repeat(np.arange(paths.n_paths), paths.lengths)[paths.indices == blank][0])
    raise ValueError(f"path {row + 1} ({' > '.join(paths.path(row))!r}): empty channel name")


def _tailor(lines: list[str]) -> Paths:
    from clients.client import path_from_dict  # the record check `clients attribute` makes

    rows = []
    for lineno, row in json_objects(progress(lines, desc="paths", unit=" lines")):
        try:
            path_from_dict(row)  # unknown or misspelt keys, types, negative counts
        except ValueError as err:
            raise ValueError(f"line {lineno}: {err}") from None
        rows.append(row)
    stamps = [r.get("timestamps") for r in rows]
    ts = stamps if stamps and all(s is not None for s in stamps) else None
    return Paths.from_sequences([r["path"] for r in rows],
                                [r.get("conversions", 1) for r in rows],
                                [r.get("value", 0) for r in rows],
                                [r.get("nulls", 0) for r in rows], timestamps=ts)


def run(args: argparse.Namespace) -> int:
    """Read, attribute and print; returns the exit status (2 on bad input, 3 past
    ``--seconds``)."""
    try:
        paths = read_paths(args.file, args.format)
        res = attribute(paths, args.model, order=args.order, shapley_form=args.shapley_form,
                        samples=args.samples, position_shares=tuple(args.position_shares),
                        half_life=args.half_life_days * DAY, direct=args.direct,
                        use_native=not args.python, deadline=deadline(args.seconds),
                        max_rank_cells=args.rank_cells)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BudgetExceeded:
        print(f"error: {args.model}: {over_budget(args.seconds)}", file=sys.stderr)
        return 3
    out = _as_json(args, paths, res) if args.json else _as_table(args, paths, res)
    print(out)
    return _plot(args, paths) if args.plot is not None else 0


def _plot(args: argparse.Namespace, paths: Paths) -> int:
    """Write ``--plot``; models that cannot run on these paths are named on stderr."""
    from training.attribution_plot import write_plot

    try:
        skipped = write_plot(paths, args.plot, order=args.order, shapley_form=args.shapley_form,
                             samples=args.samples, position_shares=tuple(args.position_shares),
                             half_life=args.half_life_days * DAY, direct=args.direct,
                             use_native=not args.python, seconds=args.seconds,
                             max_rank_cells=args.rank_cells)
    except (ValueError, OSError) as err:
        print(f"error: --plot: {err}", file=sys.stderr)
        return 2
    for model, reason in skipped.items():
        print(f"--plot: {model} left out: {reason}", file=sys.stderr)
    return 0


def _as_json(args, paths, res) -> str:
    doc = {"model": args.model, "paths": paths.n_paths,
           "total_conversions": float(paths.conversions.sum()),
           "total_value": float(paths.value.sum()), "credits": res.as_dict()}
    if args.model == "markov":
        doc["order"] = args.order
        doc["removal_effects"] = dict(zip(res.channels, res.details["removal_effects"].tolist()))
    if "stderr" in res.details:  # sampled: estimates
        doc["samples"] = int(res.details["samples"])
        doc["stderr"] = dict(zip(res.channels, res.details["stderr"].tolist()))
        doc["value_stderr"] = dict(zip(res.channels, res.details["value_stderr"].tolist()))
    if "rank_conversions" in res.details:  # ordered Shapley: the credit by rank of first touch
        for key in ("rank_conversions", "rank_value"):
            doc[key] = dict(zip(res.channels, res.details[key].tolist()))
    return json.dumps(doc)


def _as_table(args, paths, res) -> str:
    """One row a channel (an extra column: Markov's removal effect, a sampled Shapley's
    standard error), then the totals; a sampled Shapley says its credits are estimates."""
    extra = ("removal_effect", res.details["removal_effects"]) if args.model == "markov" else \
        ("stderr", res.details["stderr"]) if "stderr" in res.details else None
    width = max(7, *(_columns(c) for c in res.channels))
    head = f"{'channel':<{width}}  {'conversions':>12}  {'share':>7}  {'value':>14}"
    lines = [head + (f"  {extra[0]:>14}" if extra else ""), "-" * (len(head) + (16 if extra
                                                                                   else 0))]
    total = paths.conversions.sum()
    for i in np.argsort(-res.conversions, kind="stable"):
        share = res.conversions[i] / total if total else 0.0
        row = (f"{_left(res.channels[i], width)}  {res.conversions[i]:>12.4f}  {share:>7.2%}  "
               f"{res.value[i]:>14.4f}")
        if extra:
            row += f"  {extra[1][i]:>14.6f}"
        lines.append(row)
    lines.append(f"{'total':<{width}}  {res.conversions.sum():>12.4f}  {'':>7}  "
                 f"{res.value.sum():>14.4f}")
    if "stderr" in res.details:
        lines.append(f"sampled: {int(res.details['samples'])} permutations; the credits are "
                     "estimates (95%: within 1.96 stderr)")
    if "rank_conversions" in res.details:
        lines += _rank_rows(res, width)
    return "\n".join(lines)


def _columns(text: str) -> int:
    """Terminal columns of ``text``: wide and full-width characters (CJK, most emoji) take
    two, combining marks and other zero-width ones none (`len` misaligned the table)."""
    return sum(0 if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _left(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` terminal columns."""
    return text + " " * max(width - _columns(text), 0)


def _rank_rows(res, width: int) -> list[str]:
    """The ordered Shapley's conversions credit of each channel by the rank of its first touch
    on the path (0: the path's first channel), channels in the table's order."""
    ranks = res.details["rank_conversions"]
    head = f"{'channel':<{width}}" + "".join(f"  {f'rank {r}':>10}" for r in range(ranks.shape[1]))
    rows = [_left(res.channels[i], width) + "".join(f"  {x:>10.4f}" for x in ranks[i])
            for i in np.argsort(-res.conversions, kind="stable")]
    return ["", "conversions by rank of first touch:", head, "-" * len(head), *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.attribute", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
