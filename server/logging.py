"""Log set-up shared by every process of the server (workers and writer processes)."""
from __future__ import annotations

import logging
import os

__all__ = ["configure_logging"]


def configure_logging() -> None:
    logging.basicConfig(level=os.environ.get("TAILOR_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s")
