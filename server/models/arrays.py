"""Read a bundle's .npz files within bounds: each array's header (shape and dtype) is checked
before any array is decoded, so a small file cannot make every worker allocate gigabytes.

A text column is held by numpy at its longest entry's width for every row, and an .npz may be
compressed (the server's own copy is: `pseudonyms`): one 1 MB title in a 600-item catalog is
2.4 GB decoded from a 2.4 MB file. Text columns are bounded by the API's limits on the same
fields.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..limits import Limits
from ..store import tokens

__all__ = ["ArraysTooLarge", "decoded_bytes", "load_arrays", "text_widths"]


class ArraysTooLarge(Exception):
    """An array of a bundle file is past a bound; `str()` says which and by how much."""


OTHER = "*"
"""`text_widths` key of the bound of every text array it does not name."""


def text_widths(limits: Limits) -> dict[str, tuple[int, str]]:
    """The widest entry (in characters) each text array may hold: item ids as the API's ids
    (`id_bytes` bytes, so at most as many characters), a catalog's titles, links and category
    names, and the content map's vocabulary (words of titles) as UpsertItems' text; user ids as
    ids, or the keyed hashes of the server's copy (`tokens.TOKEN_CHARS`) under a lower
    `id_bytes`; any other text array (`OTHER`: one the server does not read is decoded all
    the same) as text. Each with the setting that gives it."""
    ids = (limits.id_bytes, "TAILOR_LIMITS__ID_BYTES")
    users = (max(limits.id_bytes, tokens.TOKEN_CHARS), "TAILOR_LIMITS__ID_BYTES")
    text = (limits.item_text_chars, "TAILOR_LIMITS__ITEM_TEXT_CHARS")
    return {"item_ids": ids, "user_ids": users, "titles": text, "urls": text, "images": text,
            "category_names": text, "vocabulary": text, OTHER: text}


def _header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) an .npy member's header gives, read without decoding the array."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(fh)
    return shape, dtype


def decoded_bytes(path: Path) -> int | None:
    """The bytes the arrays of the .npz at `path` take once decoded, from their headers; None
    when it is no readable .npz (the load names what is wrong with it)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                       for shape, dtype in (_header(zf, m) for m in zf.namelist()))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _check_headers(zf: zipfile.ZipFile, widths: dict[str, tuple[int, str]]) -> None:
    for member in zf.namelist():
        key = member.removesuffix(".npy")
        dtype = _header(zf, member)[1]
        chars = dtype.itemsize // 4 if dtype.kind == "U" else dtype.itemsize
        most, setting = widths.get(key, widths[OTHER])
        if dtype.kind in "US" and chars > most:
            raise ArraysTooLarge(f"{key} is {dtype.str.lstrip('<>|=')}: entries up to {chars} "
                                 f"characters wide, at most {most} ({setting}; numpy holds "
                                 f"every row at the widest one's width)")


def load_arrays(path: Path, keys: tuple[str, ...],
                widths: dict[str, tuple[int, str]]) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, after its headers pass (`ArraysTooLarge`); KeyError
    lists the `keys` it lacks. numpy's own errors (ValueError, OSError) for a damaged file."""
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive (one array alone?)")
    with npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise KeyError(missing)
        try:
            _check_headers(npz.zip, widths)
        except (zipfile.BadZipFile, EOFError) as err:
            raise ValueError(str(err)) from None
        return {k: npz[k] for k in npz.files}
