"""The catalog's stored updates (server.catalog.repository) on a real LMDB store."""
import grpc
import pytest

from server.catalog.errors import CatalogFull
from server.catalog.records import CatalogItem
from server.catalog.repository import CatalogRecords
from server.store import Store


@pytest.fixture
def records(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    yield CatalogRecords(store, max_items=2)
    store.close()


def test_each_call_moves_the_sequence_and_the_latest_update_wins(records):
    assert records.sequence() == 0 and records.read_all() == (0, [])
    assert records.write([CatalogItem("a", "first", "books", 1.0),
                          CatalogItem("b", "b", "books", 2.0)]) == 2
    assert records.write([CatalogItem("a", removed=True)]) == 3
    seq, items = records.read_all()
    assert seq == 3 == records.sequence()
    assert [(i.item_id, i.seq, i.removed) for i in items] == [("b", 2, False), ("a", 3, True)]
    assert all(i.at > 0 for i in items)


def test_more_items_than_the_limit_are_refused_whole(records):
    records.write([CatalogItem("a", "t", "books", 1.0), CatalogItem("b", "t", "books", 1.0)])
    records.write([CatalogItem("a", "updated", "books", 1.0)])  # an update adds no item
    with pytest.raises(CatalogFull) as err:
        records.write([CatalogItem("a", "again", "books", 1.0), CatalogItem("c", "t", "books", 1.0)])
    assert err.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limits.catalog_items" in str(err.value)
    seq, items = records.read_all()
    assert seq == 3 and {i.item_id: i.title for i in items} == {"a": "updated", "b": "t"}


def test_a_removal_is_never_absorbed_an_upsert_is_by_every_later_bundle_holding_it():
    """A full catalog drops the updates no stored bundle would serve differently; it dropped a
    removal once no stored bundle held the item, and training (which does not read removals)
    could bring the item back in the next bundle. Removals are kept."""
    from server.catalog.absorbed import absorbed
    catalogs = [(frozenset({"a"}), 200.0), (frozenset({"a"}), 300.0)]
    assert absorbed(CatalogItem("a", "t", "books", 1.0, at=100.0), catalogs)
    assert not absorbed(CatalogItem("a", "t", "books", 1.0, at=250.0), catalogs)  # newer than one
    assert not absorbed(CatalogItem("gone", removed=True, at=100.0), catalogs)  # none holds it
    assert not absorbed(CatalogItem("a", "t", "books", 1.0, at=100.0), [])
