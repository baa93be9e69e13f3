"""What Tailor writes into a data dir is its account's alone: the server's commands
(`server.files.private_umask`) and `python -m training bootstrap`, which writes the demo world and
a bundle into a server's data dir, both run under this umask."""
from __future__ import annotations

__all__ = ["PRIVATE_UMASK"]

PRIVATE_UMASK = 0o077
"""No group or other bit on anything Tailor creates: directories 0700, files 0600."""
