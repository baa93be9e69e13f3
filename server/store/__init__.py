"""The one place that touches LMDB: an environment with named tables, transactions, growth."""
from .lmdb_store import TABLES, Store
from .keys import join_key, split_key

__all__ = ["Store", "TABLES", "join_key", "split_key"]
