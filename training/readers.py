"""Readers for interaction logs (CSV, Parquet, MovieLens) and item catalogs.

Every reader returns columns as numpy arrays; `build` turns them into `Interactions` + `Catalog`
with dense codes. Bad input raises ``ValueError`` naming the file, line (1-based, header = line 1)
and column.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from contract.ids import ID_CONTROL_RE2, id_control_problem
from contract.items import SCRIPT_LINK, script_scheme_problem
from kernels.context import channel_code
from training.events import EVENTS, Catalog, Interactions

__all__ = ["read_interactions", "read_items", "read_movielens", "build", "load", "json_objects",
           "server_limit", "unaskable_ids"]

logger = logging.getLogger("tailor.training.readers")

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "event", "value")
ITEM_COLUMNS = ("id", "title", "category", "price", "url", "image")
ID_COLUMNS = ("user_id", "item_id", "id")
ITEM_ID_BYTES = 128
"""The longest item id (UTF-8 bytes) the server's API takes by default (`Limits.id_bytes`); a
server run with another ``TAILOR_LIMITS__ID_BYTES`` is followed when it is set here too. A
bundle holding a longer id, or one with a character no id may hold (`contract.ids`: a C0 or C1
control, a bidirectional control, U+2028, U+2029, a format character: Unicode Cf, U+FEFF,
U+200B, U+00AD, ...), is refused at push (RemoveItems and
TrackEvents could never name the item), so the readers refuse it first."""
_ID_CONTROL = f"[{ID_CONTROL_RE2}]"
"""An id holding a character no id may (`contract.ids`, RE2)."""
_CONTROL = "[\\x00-\\x1f\\x7f]"
"""A link holding a control character (links are not ids: `server.validation.link_problem`)."""


def _table(path: Path) -> tuple[pa.Table, int]:
    """Whole file as string columns, plus the line number of the first data row."""
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pq.read_table(path)
        for k, f in enumerate(table.schema):
            if pa.types.is_timestamp(f.type):   # native timestamps -> unix seconds
                table = table.set_column(k, f.name, _unix_seconds(table.column(k), f.type.unit))
            elif f.name in ID_COLUMNS and pa.types.is_floating(f.type):
                table = table.set_column(k, f.name, _whole_ids(path, f.name, table.column(k)))
        table = table.cast(pa.schema([(f.name, pa.string()) for f in table.schema]))
        # a null cell reads as an empty CSV cell does (value 0; an id, event or time: an error)
        return pa.table([pc.fill_null(c, "") for c in table.columns], names=table.column_names), 0
    # a byte order mark (Excel's "CSV UTF-8") is not part of the first name: pyarrow skips it
    header = _first_bytes_line(path).decode("utf-8", "replace").lstrip("\ufeff").strip().split(",")
    names = [h.strip().strip('"') for h in header]
    opts = pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                strings_can_be_null=False)
    try:
        return pacsv.read_csv(path, convert_options=opts), 2
    except pa.ArrowInvalid as err:
        raise ValueError(_csv_error(path, len(names), err)) from None


def _unix_seconds(col: pa.ChunkedArray, unit: str) -> pa.Array:
    """A native timestamp column as int64 unix seconds, a fraction of a second floored (as in a
    CSV), nulls kept (an empty time: refused later, naming the row)."""
    arr = col.combine_chunks()
    ticks = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    per = {"s": 1, "ms": 10 ** 3, "us": 10 ** 6, "ns": 10 ** 9}[unit]
    return pa.array(np.floor_divide(ticks, per), pa.int64(),
                    mask=arr.is_null().to_numpy(zero_copy_only=False))


def _whole_ids(path: Path, column: str, ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """Integer ids a tool stored as floats (pandas makes an integer column with a missing value
    float64) as the integers they hold: cast to text as floats, 12345678901 would become
    "1.2345678901e+10", an id no caller asks for. A fraction, or a value beyond int64 (every
    one would become -2**63, one id), is a ``ValueError`` naming its row."""
    values = ids.to_numpy()  # a null is NaN here; it, NaN and inf stay null (an empty id)
    finite = np.isfinite(values)
    frac = np.flatnonzero(finite & (values != np.floor(values)))
    if frac.size:
        raise ValueError(f"{_where(path, 0, int(frac[0]), column)}: {float(values[frac[0]])!r} "
                         f"is not a whole number ({frac.size} ids with a fraction): ids stored "
                         "as floats must hold integers")
    big = np.flatnonzero(finite & ((values >= 2.0 ** 63) | (values < -2.0 ** 63)))
    if big.size:
        raise ValueError(f"{_where(path, 0, int(big[0]), column)}: {float(values[big[0]])!r} "
                         f"is beyond a 64-bit integer ({big.size} such ids): ids stored as floats "
                         "must lie in -2**63 .. 2**63 - 1; store them as text")
    return pa.chunked_array([pa.array(np.where(finite, values, 0).astype(np.int64), mask=~finite)])


def _first_bytes_line(path: Path) -> bytes:
    """The first line of a CSV file, decompressed as pyarrow will (``.gz``, ``.bz2``, ...)."""
    head = b""
    with pa.input_stream(str(path), compression="detect") as fh:
        while b"\n" not in head and (block := fh.read(1 << 16)):
            head += block
    return head.split(b"\n", 1)[0]


def _open_text(path: Path):
    """The file as text for the error path's line counting, decompressed as pyarrow reads it
    (every codec it detects by the suffix: ``.gz``, ``.bz2``, ``.zst``, ``.lz4``, ...)."""
    import io

    stream = pa.input_stream(str(path), compression="detect")
    return io.TextIOWrapper(stream, newline="", encoding="utf-8", errors="replace")


def _csv_error(path: Path, n_fields: int, err: Exception) -> str:
    """Locate the first line whose field count differs from the header's."""
    import csv

    with _open_text(path) as fh:
        for line, fields in enumerate(csv.reader(fh), start=1):
            if fields and len(fields) != n_fields:
                return f"{path}:{line}: expected {n_fields} fields, found {len(fields)}"
    return f"{path}: cannot parse CSV: {err}"


def _where(path: Path, first_line: int, row: int, column: str) -> str:
    if first_line == 0:
        return f"{path}: row {row + 1}, column {column!r}"
    return f"{path}:{_line_of(path, first_line, row)}: column {column!r}"


def _line_of(path: Path, first_line: int, row: int) -> int:
    """The line (1-based) data row ``row`` starts on, counting from line ``first_line``: the
    CSV parser skips empty lines, and a quoted field may span lines (error path only)."""
    import csv

    limit = csv.field_size_limit(1 << 31)   # a long field (the one an error names) is counted
    try:
        with _open_text(path) as fh:
            reader, start, n = csv.reader(fh), 1, -1
            for fields in reader:
                line, start = start, reader.line_num + 1
                if line >= first_line and fields:
                    n += 1
                    if n == row:
                        return line
    finally:
        csv.field_size_limit(limit)
    return first_line + row


def _require(path: Path, table: pa.Table, columns, optional=()) -> None:
    missing = [c for c in columns if c not in table.column_names and c not in optional]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; header has {table.column_names}")


def _numbers(path, first_line, table, column, dtype) -> np.ndarray:
    """The column as finite numbers of ``dtype``: an empty or NaN cell is 0 (a missing number, as
    many tools write one); text, an infinity, or a number beyond ``dtype`` (1e39 as float32) is a
    ``ValueError`` naming its line."""
    col = pc.utf8_trim_whitespace(table[column])
    col = pc.if_else(pc.equal(col, ""), "0", col)   # an empty cell means 0
    try:
        wide = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        wide = np.where(np.isnan(wide), 0.0, wide)
        with np.errstate(over="ignore"):
            out = wide.astype(dtype)
        bad = np.flatnonzero(~np.isfinite(out))
        if bad.size:
            row = int(bad[0])
            raise ValueError(f"{_where(path, first_line, row, column)}: {col[row].as_py()!r} is "
                             f"not a finite number ({bad.size} rows): infinities and numbers "
                             f"beyond {np.dtype(dtype).name} would make the model NaN")
        return out
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = col.to_pylist()
        for row, text in enumerate(values):
            try:
                float(text)
            except (TypeError, ValueError):
                where = _where(path, first_line, row, column)
                raise ValueError(f"{where}: {text!r} is not a number") from None
        raise


def _rfc3339(text: str) -> int:
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        raise ValueError("no UTC offset")
    return int(when.timestamp())


MAX_TIMESTAMP = 32_503_680_000
"""3000-01-01T00:00:00Z in unix seconds: a later time is a log in milliseconds (or microseconds),
which would train with half-lives 1000 times too short and give the bundle a ``data.cutoff`` the
server compares with erasure times in seconds."""


def _timestamps(path, first_line, table) -> np.ndarray:
    try:
        out = pc.cast(table["timestamp"], pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = _fractional_seconds(table["timestamp"])
        if out is None:
            out = _parsed_timestamps(path, first_line, table["timestamp"])
    late = np.flatnonzero(out >= MAX_TIMESTAMP)
    if late.shape[0]:
        where = _where(path, first_line, int(late[0]), "timestamp")
        raise ValueError(f"{where}: {int(out[late[0]])} is after the year 3000 as unix seconds "
                         f"({late.shape[0]} rows): milliseconds? timestamps are unix seconds or "
                         "RFC 3339")
    return out


def _fractional_seconds(col) -> np.ndarray | None:
    """Unix seconds with fractions (``time.time()`` written out), floored; None unless every
    cell is a finite number."""
    try:
        secs = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if not np.isfinite(secs).all() or (np.abs(secs) >= 2.0 ** 62).any():
        return None
    return np.floor(secs).astype(np.int64)


def _parsed_timestamps(path, first_line, col) -> np.ndarray:
    uniq, inverse = np.unique(np.asarray(col.to_pylist(), dtype=object).astype(str),
                              return_inverse=True)
    out = np.empty(uniq.shape[0], np.int64)
    for k, text in enumerate(uniq.tolist()):
        try:
            out[k] = (math.floor(float(text)) if re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", text)
                      else _rfc3339(text))   # fractional seconds: floored
        except (ValueError, OverflowError):
            row = int(np.flatnonzero(inverse == k)[0])
            raise ValueError(f"{_where(path, first_line, row, 'timestamp')}: {text!r} is neither "
                             "unix seconds nor RFC 3339 with an offset") from None
    return out[inverse]


def read_interactions(path: str | Path, float_ids: bool = False) -> dict:
    """Read a Tailor interaction file (CSV, or Parquet by suffix).

    Parameters
    ----------
    path : path
        Columns ``user_id, item_id, timestamp, event, value``; ``value`` is optional (0),
        ``timestamp`` is unix seconds (a fraction is floored; at most year 3000) or RFC 3339,
        ``event`` one of `training.events.EVENTS`.
    float_ids : bool
        Read an id column of integers written as float text (``12.0``) as those integers.

    Returns
    -------
    dict of ndarray
        ``user_id``/``item_id`` (Arrow string arrays), ``timestamp`` (int64), ``event``
        (int8), ``value`` (float32).
    """
    path = Path(path)
    table, first = _table(path)
    _require(path, table, INTERACTION_COLUMNS, optional=("value",))
    if table.num_rows == 0:
        raise ValueError(f"{path}: no data rows (a header only)")
    enc = pc.dictionary_encode(table["event"]).combine_chunks()
    names = [str(n).strip().lower() for n in enc.dictionary.to_pylist()]
    inverse = enc.indices.to_numpy(zero_copy_only=False)
    unknown = [n for n in names if n not in EVENTS]
    if unknown:
        row = int(np.flatnonzero(inverse == names.index(unknown[0]))[0])
        raise ValueError(f"{_where(path, first, row, 'event')}: unknown event {unknown[0]!r}; "
                         f"allowed: {', '.join(EVENTS)}")
    code = np.array([EVENTS.index(n) for n in names], np.int8)[inverse]
    value = (_numbers(path, first, table, "value", np.float32) if "value" in table.column_names
             else np.zeros(len(code), np.float32))
    out = {"user_id": _ids(table, "user_id", path, first, float_ids=float_ids),
           "item_id": _ids(table, "item_id", path, first, item=True, float_ids=float_ids),
           "timestamp": _timestamps(path, first, table), "event": code, "value": value}
    if "channel" in table.column_names:
        out["channel"] = _channels(table)
    return out


def _channels(table: pa.Table) -> np.ndarray:
    """int8 `kernels.context.CHANNELS` codes of the optional ``channel`` column (-1: unknown)."""
    enc = pc.dictionary_encode(table["channel"].cast(pa.string())).combine_chunks()
    names = [str(n or "").strip().lower() for n in enc.dictionary.to_pylist()]
    codes = np.array([channel_code(n) for n in names] + [-1], np.int8)
    return codes[enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)]


def _ids(table: pa.Table, column: str, path: Path | None = None, first_line: int = 0,
         item: bool = False, trim: bool = False, float_ids: bool = False) -> pa.Array:
    """Ids as an Arrow string array (kept in Arrow: hashing beats sorting numpy strings), as
    written: the server takes ``"5 "`` and ``"5"`` as two ids (its users, their erasure
    tombstones, Recommend), so surrounding whitespace is kept and counted in a WARNING
    (``trim``: stripped, for MovieLens's numeric ids). A blank id (``" "``) is one the server
    takes, so it is kept and counted too (with ``trim``: empty). With ``path``, an empty or null
    id is a ``ValueError`` naming its line and column, and so is an ``item`` id the server's
    API cannot name (`item_id_bytes`, a character no id may hold: `contract.ids`)."""
    raw = table[column].combine_chunks()
    trimmed = pc.utf8_trim_whitespace(raw)
    ids = _float_text_ids(trimmed if trim else raw, column, path, float_ids)
    if not trim:
        _warn_spaced(raw, trimmed, column, path)
    if path is not None:
        empty = pc.fill_null(pc.equal(pc.utf8_length(trimmed if trim else raw), 0), True)
        n = pc.sum(empty).as_py() or 0
        if n:
            row = pc.index(empty, True).as_py()
            raise ValueError(f"{_where(path, first_line, row, column)}: empty id ({n} rows "
                             "without one)")
        if item:
            _check_item_ids(ids, path, first_line, column)
    return ids


def _warn_spaced(raw: pa.Array, trimmed: pa.Array, column: str, path: Path | None) -> None:
    """Log how many ids of ``column`` have leading or trailing whitespace (not the ids)."""
    spaced = pc.sum(pc.fill_null(pc.and_(pc.not_equal(raw, trimmed),
                                         pc.greater(pc.utf8_length(raw), 0)), False))
    n = spaced.as_py() or 0
    if n:
        logger.warning("%s: column %r: %d rows whose id has leading or trailing whitespace, "
                       "kept as written (the server's API takes ' 5' and '5' as two ids)",
                       path or "ids", column, n)


_FLOAT_TEXT = r"^-?[0-9]+\.0*$"
_EXPONENT_TEXT = r"^-?[0-9]+(\.[0-9]*)?[eE][+-]?[0-9]+$"


def _float_text_ids(ids: pa.Array, column: str, path: Path | None, convert: bool) -> pa.Array:
    """With ``convert`` (``--float-ids``), integer ids a tool wrote as float text (pandas'
    ``to_csv`` of an integer column that had a missing value: ``12345678901.0``, and from 1e16
    ``1.2345678901234568e+16``) as the integers they hold, as `_whole_ids` reads the same column
    from Parquet; without it they stay as written (the server may know a user as ``"12.0"``:
    `training export` writes ids as tracked) and a WARNING names the flag. Only when every id of
    the column is an integer in one of those forms or a plain one: a column holding any other
    id (``1.5``, ``v1.0``, ``007``) is text and stays as written."""
    suffixed = pc.match_substring_regex(ids, _FLOAT_TEXT)
    exponent = pc.match_substring_regex(ids, _EXPONENT_TEXT)
    floats = pc.fill_null(pc.or_(suffixed, exponent), False)
    if not pc.any(floats).as_py():
        return ids
    plain = pc.match_substring_regex(ids, r"^-?[0-9]+$")
    if not pc.all(pc.fill_null(pc.or_(floats, plain), False)).as_py():
        return ids
    n = pc.sum(floats).as_py()
    if not convert:
        logger.warning("%s: column %r: %d ids are integers written as floats (e.g. 12.0), read "
                       "as written; if a tool wrote integer ids so (pandas' to_csv of a column "
                       "with a missing value), give --float-ids to read them as integers (12)",
                       path or "ids", column, n)
        return ids
    out = pc.replace_substring_regex(ids, r"\.0*$", "")
    rows = np.flatnonzero(exponent.to_numpy(zero_copy_only=False))
    if rows.size:
        values = pc.cast(ids.take(pa.array(rows)), pa.float64()).to_numpy(zero_copy_only=False)
        if not (np.isfinite(values) & (values == np.floor(values)) & (np.abs(values) < 2.0 ** 63)).all():
            return ids   # not integers a float holds: text
        text = np.asarray(out.to_numpy(zero_copy_only=False), dtype=object)
        text[rows] = values.astype(np.int64).astype(str)
        out = pa.array(text, pa.string())
    logger.warning("%s: column %r: %d ids written as floats (e.g. 12.0) read as the integers "
                   "they hold (12): --float-ids", path or "ids", column, n)
    return out


def item_id_bytes() -> int:
    """The item id limit, as the server reads it from its environment (`server_limit`)."""
    return server_limit("id_bytes", ITEM_ID_BYTES)


def server_limit(name: str, default: int) -> int:
    """Limit ``name`` of the server's ``Limits`` as the server reads it from its environment:
    ``TAILOR_LIMITS__<NAME>``, else ``name`` in the ``TAILOR_LIMITS`` JSON, else ``default``
    (the server's); variable names in any case, as the server's settings take them. (A server
    config file's ``[limits]`` is not read here: give the training job one of those
    variables.)"""
    env = {key.upper(): value for key, value in os.environ.items()}
    variable = f"TAILOR_LIMITS__{name.upper()}"
    text = env.get(variable, "").strip()
    if not text and env.get("TAILOR_LIMITS", "").strip():
        try:
            doc = json.loads(env["TAILOR_LIMITS"])
        except ValueError:
            raise ValueError("TAILOR_LIMITS: not valid JSON") from None
        value = doc.get(name) if isinstance(doc, dict) else None
        text = "" if value is None else str(value)
    try:
        return int(text) if text else default
    except ValueError:
        raise ValueError(f"{variable}: expected a whole number, got {text!r}") from None


def unaskable_ids(ids) -> np.ndarray:
    """Mask of the ids the server's API refuses to be asked about (`item_id_bytes` UTF-8
    bytes, the limit of every id, or a character no id may hold: `contract.ids`): Recommend
    of such a user fails its whole batch."""
    ids = pa.array(np.asarray(ids, dtype=object), pa.string())
    bad = pc.or_(pc.greater(pc.binary_length(ids), item_id_bytes()),
                 pc.match_substring_regex(ids, _ID_CONTROL))
    return pc.fill_null(bad, True).to_numpy(zero_copy_only=False)


def _first_bad(bad: pa.Array, values: pa.Array) -> tuple[int, int, str, str] | None:
    """(how many rows `bad` flags, the first of them, its value, the value as an error shows
    it), or None when it flags none."""
    n = pc.sum(bad).as_py() or 0
    if not n:
        return None
    row = pc.index(bad, True).as_py()
    value = values[row].as_py()
    return n, row, value, repr(value[:16]) + ("..." if len(value) > 16 else "")


def _check_item_ids(ids: pa.Array, path: Path, first_line: int, column: str) -> None:
    """Refuse an item id longer than `item_id_bytes` or holding a character no id may hold
    (`contract.ids`), naming its line: the server would refuse the whole bundle for it
    (``items.npz: item_ids``)."""
    limit = item_id_bytes()
    bad = pc.or_(pc.greater(pc.binary_length(ids), limit),
                 pc.match_substring_regex(ids, _ID_CONTROL))
    found = _first_bad(bad, ids)
    if found is None:
        return
    n, row, value, shown = found
    problem = (f"is {len(value.encode())} bytes, at most {limit}" if len(value.encode()) > limit
               else id_control_problem(value))
    raise ValueError(f"{_where(path, first_line, row, column)}: {shown} {problem} ({n} rows "
                     "with an item id the server's API cannot name: it refuses a bundle holding "
                     "one; TAILOR_LIMITS__ID_BYTES sets the length both sides take)")


def read_items(path: str | Path, float_ids: bool = False) -> dict:
    """Read an item catalog: ``id`` required; ``title, category, price, url, image`` optional."""
    path = Path(path)
    table, first = _table(path)
    _require(path, table, ITEM_COLUMNS, optional=("title", "category", "price", "url", "image"))
    n = table.num_rows
    if n == 0:
        raise ValueError(f"{path}: no data rows (a header only)")
    out = {"id": np.asarray(_ids(table, "id", path, first, item=True, float_ids=float_ids).to_numpy(
        zero_copy_only=False), dtype=str)}
    for col in ("title", "category", "url", "image"):
        if col in ("title", "url", "image") and col in table.column_names:
            _check_text_chars(table[col], path, first, col)
        if col in ("url", "image") and col in table.column_names:
            _check_links(table[col], path, first, col)
        out[col] = (np.asarray(table[col].to_numpy(zero_copy_only=False), dtype=str)
                    if col in table.column_names else np.full(n, "", dtype=str))
    out["price"] = (_numbers(path, first, table, "price", np.float32)
                    if "price" in table.column_names else np.zeros(n, np.float32))
    uniq, counts = np.unique(out["id"], return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: column 'id': duplicate item id {str(uniq[counts > 1][0])!r}")
    return out


ITEM_TEXT_CHARS = 2048
"""The server's default `Limits.item_text_chars`: the longest title, url or image UpsertItems
takes (`item_text_chars` reads the server's environment)."""


def item_text_chars() -> int:
    """The title/url/image limit, as the server reads it from its environment (`server_limit`)."""
    return server_limit("item_text_chars", ITEM_TEXT_CHARS)


def _check_text_chars(col: pa.ChunkedArray, path: Path, first_line: int, column: str) -> None:
    """Refuse a title, url or image longer than `item_text_chars`, naming its line: items.npz
    holds each text column at its longest entry's width for every item (one 1 MB title in a
    600-item catalog: a 2.4 GB items.npz, held by every server worker)."""
    col = col.combine_chunks().cast(pa.string())
    limit = item_text_chars()
    found = _first_bad(pc.fill_null(pc.greater(pc.utf8_length(col), limit), False), col)
    if found is None:
        return
    n, row, value, shown = found
    raise ValueError(f"{_where(path, first_line, row, column)}: {shown} is {len(value)} "
                     f"characters, at most {limit} ({n} rows; UpsertItems refuses them too; "
                     "TAILOR_LIMITS__ITEM_TEXT_CHARS sets the length both sides take)")


def _check_links(col: pa.ChunkedArray, path: Path, first_line: int, column: str) -> None:
    """A link pages and emails put in an href or src as is: no control character and no scheme
    that can run script (`contract.items.SCRIPT_LINK`; the server refuses a bundle holding one:
    ``items.npz: urls``)."""
    col = col.combine_chunks()
    control = pc.match_substring_regex(col, _CONTROL)
    scheme = pc.match_substring_regex(col, SCRIPT_LINK)
    bad = pc.fill_null(pc.or_(control, scheme), False)
    found = _first_bad(bad, col)
    if found is None:
        return
    n, row, value, shown = found
    problem = ("contains a control character (0x00-0x1F or 0x7F)" if control[row].as_py()
               else script_scheme_problem(value.split(":", 1)[0].strip(" ")))
    raise ValueError(f"{_where(path, first_line, row, column)}: {shown} {problem} ({n} rows): "
                     "pages and emails put it in an href or src as is")


def _separator(line: str) -> str:
    if "::" in line:
        return "::"
    if "\t" in line:
        return "\t"
    return "," if "," in line else " "


def read_movielens(path: str | Path) -> dict:
    """Read ``user item rating timestamp`` rows separated by ``::``, tab, comma or spaces.

    A header line is skipped if its rating or timestamp field is not numeric. Every row becomes a
    ``rating`` interaction whose value is the rating. The file is parsed as bytes (about two
    copies of it at a time), never split into Python strings per line.
    """
    path = Path(path)
    with pa.input_stream(str(path), compression="detect") as fh:   # .gz, .bz2, ...
        data = fh.read()
    first, pos, end = _first_line(data)
    if first is None:
        raise ValueError(f"{path}: empty file")
    head = data[pos:end].decode("utf-8", "replace").rstrip("\r")
    sep = _separator(head)
    fields = re.split(r"\s+", head.strip()) if sep == " " else head.split(sep)
    header = len(fields) >= 4 and not _numeric(fields[2:4])
    skip = first + 1 if header else first
    body = data[end + 1:] if header else data[pos:]
    del data
    if not body.strip():
        raise ValueError(f"{path}: no data rows (a header only)")
    if sep == " ":   # runs of blanks separate; blanks around a line's fields do not
        body = re.sub(rb"[ \t]+", b"\t", re.sub(rb"(?m)^[ \t]+|[ \t]+(?=\r?$)", b"", body))
    else:
        body = body.replace(sep.encode(), b"\t")
    opts = pacsv.ParseOptions(delimiter="\t")
    names = ["user_id", "item_id", "rating", "timestamp"]
    try:
        table = pacsv.read_csv(pa.BufferReader(body), parse_options=opts,
                               read_options=pacsv.ReadOptions(column_names=names),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={n: pa.string() for n in names}))
    except pa.ArrowInvalid as err:
        with _open_text(path) as fh:
            lines = fh.read().splitlines()
        raise ValueError(_movielens_shape(path, lines, skip, sep, err)) from None
    del body
    line0 = skip + 1
    rating = _numbers(path, line0, table, "rating", np.float32)
    return {"user_id": _ids(table, "user_id", path, line0, trim=True),
            "item_id": _ids(table, "item_id", path, line0, item=True, trim=True),
            "timestamp": _timestamps(path, line0, table),
            "event": np.full(table.num_rows, EVENTS.index("rating"), np.int8), "value": rating}


def _first_line(data: bytes) -> tuple[int | None, int, int]:
    """(0-based index, start, end offsets) of the first line of ``data`` that is not blank."""
    pos = index = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        if data[pos:end].strip():
            return index, pos, end
        pos, index = end + 1, index + 1
    return None, 0, 0


def _movielens_shape(path: Path, lines: list[str], skip: int, sep: str, err: Exception) -> str:
    """Name the first non-empty line (from index ``skip``) without 4 ``sep``-separated fields."""
    for lineno, line in enumerate(lines[skip:], start=skip + 1):
        if not line:   # skipped by the parser, as by the reader's line numbers
            continue
        n = len(re.split(r"\s+", line.strip())) if sep == " " else len(line.split(sep))
        if n != 4:
            return (f"{path}:{lineno}: expected 4 fields (user item rating timestamp) separated "
                    f"by {sep!r}, found {n}: {line[:80]!r}")
    return f"{path}: expected 4 fields per line (user item rating timestamp): {err}"


def _numeric(fields) -> bool:
    try:
        [float(f) for f in fields]
        return True
    except ValueError:
        return False


def _codes(values: pa.Array, table: np.ndarray) -> np.ndarray:
    return pc.index_in(values, value_set=pa.array(table, pa.string())).to_numpy(
        zero_copy_only=False).astype(np.int32)


def build(rows: dict, items: dict | None = None) -> tuple[Interactions, Catalog]:
    """Dense codes: users sorted by id; catalog items first, unseen interaction items after."""
    user_ids = np.sort(np.asarray(pc.unique(rows["user_id"]).to_numpy(zero_copy_only=False),
                                  dtype=str))
    known = items["id"].astype(str) if items is not None else np.zeros(0, dtype=str)
    seen = pc.unique(rows["item_id"])
    extra = seen.filter(pc.invert(pc.is_in(seen, value_set=pa.array(known, pa.string()))))
    extra = np.sort(np.asarray(extra.to_numpy(zero_copy_only=False), dtype=str))
    item_ids = np.concatenate([known, extra]).astype(str)
    inter = Interactions(user_ids, item_ids, _codes(rows["user_id"], user_ids),
                         _codes(rows["item_id"], item_ids), rows["timestamp"].astype(np.int64),
                         rows["event"].astype(np.int8), rows["value"].astype(np.float32),
                         rows.get("channel"))
    n_extra = extra.shape[0]
    cats = np.concatenate([items["category"], np.full(n_extra, "unknown")]) if items else \
        np.full(n_extra, "unknown")
    category_names, category = np.unique(cats.astype(str), return_inverse=True)
    catalog = Catalog(
        item_ids=item_ids,
        titles=_pad(items, "title", n_extra, ""), urls=_pad(items, "url", n_extra, ""),
        images=_pad(items, "image", n_extra, ""),
        category=category.astype(np.int32), category_names=category_names,
        price=np.concatenate([items["price"], np.zeros(n_extra, np.float32)]).astype(np.float32)
        if items else np.zeros(n_extra, np.float32))
    return inter, catalog


def _pad(items, key, n_extra, fill) -> np.ndarray:
    head = items[key].astype(str) if items else np.zeros(0, dtype=str)
    return np.concatenate([head, np.full(n_extra, fill)]).astype(str)


def load(interactions: str | Path, items: str | Path | None = None,
         fmt: str = "tailor", keep=None, float_ids: bool = False) -> tuple[Interactions, Catalog]:
    """Read and encode in one call (``fmt`` is ``"tailor"`` or ``"movielens"``); ``keep(rows)``
    returns the rows to train on (erasure: `training.erasure.drop_erased`); ``float_ids``:
    integer ids written as float text are read as integers (`_float_text_ids`)."""
    if fmt not in ("tailor", "movielens"):
        raise ValueError(f"format must be 'tailor' or 'movielens', got {fmt!r}")
    rows = (read_movielens(interactions) if fmt == "movielens"
            else read_interactions(interactions, float_ids))
    if keep is not None:
        rows = keep(rows)
    catalog_rows = read_items(items, float_ids) if items else None
    if catalog_rows is not None:
        _check_catalog_covers(rows["item_id"], catalog_rows["id"], interactions, items)
    inter, catalog = build(rows, catalog_rows)
    logger.info("read %d rows, %d users, %d items from %s", len(inter), inter.n_users,
                inter.n_items, interactions)
    return inter, catalog


def _check_catalog_covers(logged: pa.Array, catalog_ids: np.ndarray, log_path, items_path) -> None:
    """A catalog that names none of the log's items is a ``ValueError`` (ids of another scheme,
    or the wrong file: every item would train as category "unknown" without title, url or
    price); one that misses some is logged (they train so, e.g. items no longer sold)."""
    seen = pc.unique(logged)
    missing = seen.filter(pc.invert(pc.is_in(seen, value_set=pa.array(catalog_ids, pa.string()))))
    if len(missing) == len(seen) and len(seen):
        raise ValueError(f"{items_path}: none of the {len(seen)} item ids of {log_path} is in the "
                         f"catalog ({len(catalog_ids)} items): e.g. {missing[0].as_py()!r} in the "
                         f"log, {str(catalog_ids[0])!r} in the catalog; the ids must match")
    if len(missing):
        logger.warning("%d of %d item ids of %s are not in the catalog %s (e.g. %r): they train "
                       "with category 'unknown' and no title, url or price", len(missing),
                       len(seen), log_path, items_path, missing[0].as_py())


def json_objects(lines: Iterable[str], where: str = "line ") -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines text, 1-based; a line that
    is not one JSON object is a ``ValueError`` named `where` + its number ("path:" or "line ")."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}{lineno}: not JSON ({err.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}{lineno}: expected a JSON object on each line, got "
                             f"{line.strip()[:80]!r}")
        yield lineno, rec
