"""Checks of a PNG picture: it decodes, has the expected size in pixels and is not blank."""
from __future__ import annotations

import io
import struct

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which must come first."""
    assert data[:8] == PNG_MAGIC, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def check_png(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode ``data`` (matplotlib.image.imread); assert ``size`` (w, h) and non-blank pixels."""
    import matplotlib.image as mpimg

    assert png_size(data) == size
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (size[1], size[0])
    assert float(pixels[..., :3].var()) > 0, "blank picture"
    return pixels
