"""Catalog updates between trainings: UpsertItems and RemoveItems (docs/catalog.md).

`records` is the stored update, `repository` the store side (one table, one sequence number),
`overlay` builds the served bundle from a trained one plus the updates, and `handler` validates
requests, writes them and keeps every worker's served bundle in step with the store.
"""
from .handler import Catalog, CatalogChange
from .records import CatalogItem

__all__ = ["Catalog", "CatalogChange", "CatalogItem"]
