"""Progress bars for the long training jobs (tqdm on stderr), shown only when stderr is a terminal."""
from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress"]


def progress(iterable=None, *, desc: str, total: float | None = None, unit: str = "it",
             stream=None, **kw) -> tqdm:
    """A tqdm bar over `iterable` (or updated by hand) on `stream` (default stderr); disabled
    when the stream is not a terminal, so logs and pipes stay clean."""
    stream = stream or sys.stderr
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=stream,
                disable=not stream.isatty(), dynamic_ncols=True, **kw)
