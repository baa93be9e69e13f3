"""The one place that touches LMDB: an environment with named tables, transactions, growth."""
from .lmdb_store import TABLES, Store, delete_prefix, scan_prefix
from .keys import join_key, split_key
from .lock import lock_data_dir

__all__ = ["Store", "TABLES", "join_key", "split_key", "lock_data_dir", "scan_prefix", "delete_prefix"]
