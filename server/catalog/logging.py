"""The catalog's logger."""
from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("tailor.catalog")
