"""The LMDB store on a real environment: tables, snapshots, growth, the full-map error."""
import pytest

from server.errors import ResourceExhausted
from server.store import Store, join_key, split_key


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "lmdb", map_size=1 << 20, max_map_size=8 << 20, sync=False)
    yield s
    s.close()


def test_get_many_keeps_input_order_with_misses(store):
    store.put_many("profiles", [(b"a", b"1"), (b"c", b"3")])
    assert store.get_many("profiles", [b"c", b"b", b"a"]) == [b"3", None, b"1"]
    assert store.get("events", b"a") is None  # tables are separate


def test_prefix_scan_finds_one_users_records_only(store):
    store.put_many("events", [(join_key("u1", "e1"), b"x"), (join_key("u1", "e2"), b"y"),
                              (join_key("u10", "e1"), b"z")])
    keys = [split_key(k) for k, _ in store.scan("events", join_key("u1", ""))]
    assert keys == [["u1", "e1"], ["u1", "e2"]]


def test_separator_in_a_key_part_is_refused():
    with pytest.raises(ValueError):
        join_key("bad\x1fid", "x")


def test_map_grows_then_refuses_past_its_ceiling_without_partial_writes(store):
    store.put_many("events", [(f"k{i}".encode(), b"v" * 2000) for i in range(1500)])  # > 1 MiB
    assert store.env.info()["map_size"] > 1 << 20
    with pytest.raises(ResourceExhausted):
        store.put_many("events", [(f"big{i}".encode(), b"v" * 4000) for i in range(5000)])
    assert store.get("events", b"big0") is None
    assert store.get("events", b"k1499") == b"v" * 2000


def test_unknown_table_is_named(store):
    with pytest.raises(KeyError, match="nope"):
        store.get("nope", b"k")
