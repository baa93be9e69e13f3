"""The contract between `training/` and `server/`: the bundle format, the event vocabulary and
the stable item codes (`contract.items`), the characters no id may hold (`contract.ids`).

Both sides import it; it imports only the standard library (docs/bundle.md).
"""
from .bundle import (
    FORMAT,
    MAX_UNIX_SECONDS,
    BundleError,
    Manifest,
    check_files,
    parse_manifest,
    read_manifest,
    sha256_file,
)
from .events import (
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_HALF_LIFE_DAYS,
    EVENT_TYPES,
    VALUED_TYPES,
)

__all__ = [
    "DEFAULT_EVENT_WEIGHTS", "DEFAULT_HALF_LIFE_DAYS", "EVENT_TYPES", "FORMAT", "MAX_UNIX_SECONDS",
    "VALUED_TYPES",
    "BundleError", "Manifest", "check_files", "parse_manifest", "read_manifest", "sha256_file",
]
