"""The one place that touches LMDB: an environment with named tables, key layouts, record
layouts and their migrations, transactions, growth."""
from . import keys, outbox, tokens
from .keys import join_key, split_key
from .layouts import KINDS, RecordKind
from .lmdb_store import TABLES, Store
from .lock import lock_data_dir
from .sweeps import SweepPace, scan, sweep
from .table import Table

__all__ = ["Store", "Table", "TABLES", "KINDS", "RecordKind", "keys", "outbox", "tokens",
           "join_key", "split_key", "lock_data_dir", "scan", "sweep", "SweepPace"]
