import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.events import EVENTS
from training.readers import load, read_interactions, read_items, read_movielens


def _write(path, text):
    path.write_text(text)
    return path


def test_csv_with_unix_and_rfc3339_timestamps(tmp_path):
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n"
               "u1,a,1700000000,view,0\n"
               "u1,b,2023-11-14T22:13:21Z,purchase,19.5\n"
               "u2,a,2023-11-15T00:13:20+02:00,click,\n")
    rows = read_interactions(f)
    assert rows["timestamp"].tolist() == [1700000000, 1700000001, 1700000000]
    assert [EVENTS[e] for e in rows["event"]] == ["view", "purchase", "click"]
    assert rows["value"][1] == pytest.approx(19.5)
    assert rows["user_id"].tolist() == ["u1", "u1", "u2"]


def test_parquet_native_timestamps_are_utc_seconds(tmp_path):
    ts = pa.array([1700000000, 1700000060], pa.timestamp("s", tz="UTC"))
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4], "timestamp": ts,
                             "event": ["view", "view"]}), tmp_path / "i.parquet")
    rows = read_interactions(tmp_path / "i.parquet")
    assert rows["timestamp"].tolist() == [1700000000, 1700000060]
    assert rows["user_id"].tolist() == ["1", "2"] and rows["value"].tolist() == [0, 0]


def test_parquet_matches_csv(tmp_path):
    table = pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"],
                      "timestamp": [1, 2], "event": ["view", "add_to_cart"], "value": [0.0, 1.0]})
    pq.write_table(table, tmp_path / "i.parquet")
    rows = read_interactions(tmp_path / "i.parquet")
    assert rows["item_id"].tolist() == ["a", "b"] and rows["timestamp"].tolist() == [1, 2]


@pytest.mark.parametrize("body, where, what", [
    ("u1,a,17x,view,0\n", "i.csv:2: column 'timestamp'", "17x"),
    ("u1,a,1,view,0\nu1,a,1,clicked,0\n", "i.csv:3: column 'event'", "clicked"),
    ("u1,a,1,view,0\nu1,a,1,view,0\nu1,a,1,view,abc\n", "i.csv:4: column 'value'", "abc"),
])
def test_bad_values_name_file_line_and_column(tmp_path, body, where, what):
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n" + body)
    with pytest.raises(ValueError, match=where) as err:
        read_interactions(f)
    assert what in str(err.value)


def test_ragged_row_names_its_line(tmp_path):
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n"
               "u1,a,1,view,0\nu1,a,1,view\n")
    with pytest.raises(ValueError, match=r"i.csv:3: expected 5 fields, found 4"):
        read_interactions(f)


def test_missing_column_is_named(tmp_path):
    f = _write(tmp_path / "i.csv", "user_id,item,timestamp,event\nu1,a,1,view\n")
    with pytest.raises(ValueError, match="item_id"):
        read_interactions(f)


@pytest.mark.parametrize("text", [
    "1::10::5::978300760\n1::20::3::978300761\n2::10::4::978300762\n",
    "1\t10\t5\t978300760\n1\t20\t3\t978300761\n2\t10\t4\t978300762\n",
    "userId,movieId,rating,timestamp\n1,10,5.0,978300760\n1,20,3.0,978300761\n2,10,4,978300762\n",
    "1 10  5 978300760\n1   20 3 978300761\n\n2 10 4 978300762\n",
    "\n  1 10  5 978300760 \n1   20 3 978300761\t\r\n\n 2 10 4 978300762\n\n",
])
def test_movielens_separators_and_header(tmp_path, text):
    rows = read_movielens(_write(tmp_path / "r.dat", text))
    assert rows["user_id"].tolist() == ["1", "1", "2"]
    assert rows["item_id"].tolist() == ["10", "20", "10"]
    assert rows["value"].tolist() == [5.0, 3.0, 4.0]
    assert rows["timestamp"].tolist() == [978300760, 978300761, 978300762]
    assert set(rows["event"]) == {EVENTS.index("rating")}


def test_movielens_bad_rating_names_line(tmp_path):
    f = _write(tmp_path / "r.dat", "user item rating ts\n1 10 5 1\n1 11 five 2\n")
    with pytest.raises(ValueError, match=r"r.dat:3: column 'rating'"):
        read_movielens(f)


def test_items_and_codes_put_catalog_first(tmp_path):
    inter = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n"
                   "u1,zz,1,view,0\nu2,b,2,rating,4\n")
    items = _write(tmp_path / "items.csv", "id,title,category,price,url\n"
                   "b,Bee,books,12.5,http://x/b\na,Ay,toys,3,http://x/a\n")
    inter_, catalog = load(inter, items)
    assert inter_.item_ids.tolist() == ["b", "a", "zz"]
    assert inter_.item.tolist() == [2, 0]
    assert catalog.category_names[catalog.category].tolist() == ["books", "toys", "unknown"]
    assert catalog.price.tolist() == [12.5, 3.0, 0.0]


def test_duplicate_item_ids_rejected(tmp_path):
    f = _write(tmp_path / "items.csv", "id,title\na,x\na,y\n")
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        read_items(f)


def test_an_optional_channel_column_becomes_codes(tmp_path):
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value,channel\n"
               "u,a,1,view,0,web\nu,b,2,view,0,App\nv,a,3,view,0,fax\nv,b,4,view,0,\n")
    inter, _ = load(f)
    assert inter.channel.tolist() == [0, 1, -1, -1]          # kernels.context.CHANNELS codes
    assert inter.subset(inter.channel >= 0).channel.tolist() == [0, 1]
    plain = _write(tmp_path / "p.csv", "user_id,item_id,timestamp,event\nu,a,1,view\n")
    assert load(plain)[0].channel is None


def test_a_header_only_file_has_no_data_rows(tmp_path):
    # both went on to fail deep in training with an IndexError
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n")
    with pytest.raises(ValueError, match=r"i.csv: no data rows"):
        read_interactions(f)
    f = _write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\n\n")
    with pytest.raises(ValueError, match=r"r.csv: no data rows"):
        read_movielens(f)


@pytest.mark.parametrize("name, text, where", [
    # pyarrow skips blank lines, so every row after one was named a line too early
    ("i.csv", "user_id,item_id,timestamp,event,value\nu1,a,1,view,0\n\nu1,a,17x,view,0\n",
     r"i.csv:4: column 'timestamp'"),
    ("r.dat", "1::10::5::978300760\n\n\n1::20::x::978300761\n", r"r.dat:4: column 'rating'"),
    ("r.dat", "user item rating ts\n1 10 5 1\n\n1 11 five 2\n", r"r.dat:4: column 'rating'"),
])
def test_bad_values_after_blank_lines_name_their_own_line(tmp_path, name, text, where):
    f = _write(tmp_path / name, text)
    with pytest.raises(ValueError, match=where):
        read_movielens(f) if name.endswith(".dat") else read_interactions(f)


@pytest.mark.parametrize("text, where", [
    ("1::10::5::978300760\nbad line\n2::10::4::978300762\n", r"r.dat:2: expected 4 fields"),
    ("1::10::5::978300760\n\n2::10::4::978300762::x\n", r"r.dat:3: expected 4 fields"),
    ("1\t10\t5\t978300760\n1\t11\t978300761\n", r"r.dat:2: expected 4 fields"),
])
def test_a_movielens_line_of_the_wrong_shape_is_named(tmp_path, text, where):
    # the error quoted pyarrow's message without a line number
    with pytest.raises(ValueError, match=where):
        read_movielens(_write(tmp_path / "r.dat", text))


def test_reading_movielens_holds_few_copies_of_the_file(tmp_path):
    # the file was held as text, a list of line strings (~50 bytes of overhead each), the
    # rejoined body, the separator-replaced body and its encoding: 7 times its size in
    # Python objects (ML-25M's 680 MB: several GB before training starts)
    import tracemalloc

    n = 100_000
    f = tmp_path / "ratings.dat"
    f.write_text("userId::movieId::rating::timestamp\n" + "".join(
        f"{u % 7000}::{u % 9000}::{u % 5 + 1}::{978300760 + u}\n" for u in range(n)))
    size = f.stat().st_size
    tracemalloc.start()
    try:
        rows = read_movielens(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows["timestamp"].shape[0] == n and rows["timestamp"][-1] == 978300760 + n - 1
    assert peak < 3 * size, (peak, size)


@pytest.mark.parametrize("name, text, where", [
    # every row without an id became one user or item named "" (a parquet null: "None"),
    # pooling unrelated rows: the phantom item could be the most popular one, and served
    ("i.csv", "user_id,item_id,timestamp,event\nu1,a,1,view\nu1,,2,view\nu2,,3,view\n",
     r"i.csv:3: column 'item_id': empty id \(2 rows without one\)"),
    ("i.csv", "user_id,item_id,timestamp,event\n,a,1,view\n", r"i.csv:2: column 'user_id'"),
    ("r.dat", "1::10::5::1\n1::::4::2\n", r"r.dat:2: column 'item_id'"),
    ("items.csv", "id,title\na,x\n,y\n", r"items.csv:3: column 'id'"),
])
def test_empty_ids_are_refused(tmp_path, name, text, where):
    f = _write(tmp_path / name, text)
    read = {"i.csv": read_interactions, "r.dat": read_movielens, "items.csv": read_items}[name]
    with pytest.raises(ValueError, match=where):
        read(f)


def test_null_ids_in_parquet_are_refused(tmp_path):
    pq.write_table(pa.table({"user_id": ["u1", None], "item_id": ["a", "b"],
                             "timestamp": [1, 2], "event": ["view", "view"]}),
                   tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"i.parquet: row 2, column 'user_id': empty id"):
        read_interactions(tmp_path / "i.parquet")


@pytest.mark.parametrize("column, where", [
    # a null event died on an IndexError; a null timestamp became NaN, then a garbage int64
    ("event", r"i.parquet: row 2, column 'event': unknown event ''"),
    ("timestamp", r"i.parquet: row 2, column 'timestamp': '' is neither"),
])
def test_null_cells_in_parquet_are_named_as_empty_csv_cells_are(tmp_path, column, where):
    table = {"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [1, 2],
             "event": ["view", "view"], "value": [1.0, None]}
    table[column] = [table[column][0], None]
    pq.write_table(pa.table(table), tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=where):
        read_interactions(tmp_path / "i.parquet")


def test_a_null_value_in_parquet_is_0_as_an_empty_csv_cell(tmp_path):
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [1, 2],
                             "event": ["rating", "view"], "value": [4.0, None]}),
                   tmp_path / "i.parquet")
    assert read_interactions(tmp_path / "i.parquet")["value"].tolist() == [4.0, 0.0]


@pytest.mark.parametrize("stamp", ["1700212111000", "1700212111000000", "3001-01-01T00:00:00Z"])
def test_timestamps_in_milliseconds_are_refused(tmp_path, stamp):
    # a log in milliseconds trained without a word: half-lives 1000 times too short, and a
    # bundle whose data.cutoff (ms) the server compares with erasure times in seconds (users
    # erased after it were never masked)
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\nu1,a,1700212111,view\n"
               f"u1,b,{stamp},view\n")
    with pytest.raises(ValueError, match=r"i.csv:3: column 'timestamp': .* after the year 3000"
                                         r".*milliseconds"):
        read_interactions(f)
    f = _write(tmp_path / "r.dat", f"1::10::5::1700212111\n\n1::11::4::{stamp}\n")
    with pytest.raises(ValueError, match=r"r.dat:3: column 'timestamp'"):
        read_movielens(f)


def test_fractional_unix_seconds_are_unix_seconds(tmp_path):
    # "1700000000.5" (time.time() written by pandas) was refused as "neither unix seconds
    # nor RFC 3339"; floored to whole seconds, as `training export` writes them
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\nu1,a,1700000000.5,view\n"
               "u1,b,1700000001,view\nu2,a,1700000002.999,view\n")
    assert read_interactions(f)["timestamp"].tolist() == [1700000000, 1700000001, 1700000002]
    for bad in ("nan", "inf", "1e9x"):
        f = _write(tmp_path / "i.csv", f"user_id,item_id,timestamp,event\nu1,a,1.5,view\n"
                   f"u1,b,{bad},view\n")
        with pytest.raises(ValueError, match=r"i.csv:3: column 'timestamp'"):
            read_interactions(f)


def test_a_compressed_csv_reads_as_the_plain_one(tmp_path):
    # pyarrow decompresses interactions.csv.gz, but the header was read from the compressed
    # bytes: no column was typed as text, and the numeric ids died in a pyarrow traceback
    import gzip

    text = ("user_id,item_id,timestamp,event,value\n1,10,1700000000,view,0\n"
            "2,11,1700000100,purchase,9.5\n")
    with gzip.open(tmp_path / "i.csv.gz", "wt") as fh:
        fh.write(text)
    plain = read_interactions(_write(tmp_path / "i.csv", text))
    packed = read_interactions(tmp_path / "i.csv.gz")
    for key in ("user_id", "item_id", "timestamp", "event", "value"):
        assert list(packed[key]) == list(plain[key]), key
    with gzip.open(tmp_path / "bad.csv.gz", "wt") as fh:
        fh.write(text + "\n3,12,17x,view,0\n")
    with pytest.raises(ValueError, match=r"bad.csv.gz:5: column 'timestamp'"):
        read_interactions(tmp_path / "bad.csv.gz")
    with gzip.open(tmp_path / "r.dat.gz", "wt") as fh:
        fh.write("1::10::5::978300760\n\n1::11::x::978300761\n")
    with pytest.raises(ValueError, match=r"r.dat.gz:3: column 'rating'"):
        read_movielens(tmp_path / "r.dat.gz")


def test_a_bad_line_of_a_zstd_csv_is_named_by_its_line(tmp_path):
    # the data path read any codec pyarrow detects, the error path only .gz and .bz2: a
    # .csv.zst with a short row at line 3 was reported as "line 1: expected 4 fields, found 1"
    import pyarrow as pa

    with pa.output_stream(str(tmp_path / "bad.csv.zst"), compression="zstd") as fh:
        fh.write(b"user_id,item_id,timestamp,event\nu1,a,1700000000,view\nu2,b\n")
    with pytest.raises(ValueError, match=r"bad.csv.zst:3: expected 4 fields, found 2"):
        read_interactions(tmp_path / "bad.csv.zst")


_LONG = "https://shop.example/p/" + "x" * 120  # 143 bytes: the server's API takes 128


@pytest.mark.parametrize("name, text, where", [
    ("i.csv", f"user_id,item_id,timestamp,event\nu1,a,1,view\nu1,{_LONG},2,view\n",
     r"i.csv:3: column 'item_id': 'https://shop.exa'\.\.\. is 143 bytes, at most 128"),
    ("i.csv", 'user_id,item_id,timestamp,event\nu1,"a\x01b",1,view\n',
     r"i.csv:2: column 'item_id': 'a\\x01b' contains a control character"),
    ("i.csv", 'user_id,item_id,timestamp,event\nu1,a,1,view\nu1,"gpj.\u202eexe",2,view\n',
     r"i.csv:3: column 'item_id': .* contains a bidirectional control character \(U\+202E\)"),
    ("items.csv", 'id,title\na,x\n"b\x85",y\n',
     r"items.csv:3: column 'id': .* contains a C1 control character \(U\+0085\)"),
    ("r.dat", f"1::a::5::1\n1::{_LONG}::4::2\n", r"r.dat:2: column 'item_id': .* 143 bytes"),
    ("items.csv", f"id,title\na,x\n{_LONG},y\n", r"items.csv:3: column 'id': .* 143 bytes"),
])
def test_item_ids_the_servers_api_cannot_name_are_refused(tmp_path, name, text, where):
    # the server refuses a bundle holding one (items.npz: item_ids), after a whole training
    f = _write(tmp_path / name, text)
    read = {"i.csv": read_interactions, "r.dat": read_movielens, "items.csv": read_items}[name]
    with pytest.raises(ValueError, match=where):
        read(f)


def test_the_readers_and_the_server_refuse_the_same_id_characters():
    """Training's id rule (RE2, `contract.ids`) and the server's (`validation.id_problem`) flag
    the same ids: a catalog id the server would refuse in a bundle is refused at read, and
    the backtest does not ask about a user the API would refuse."""
    from server.validation import id_problem
    from training.readers import unaskable_ids
    ids = ["ok", "a\x00", "a\x7f", "a\x85", "a\x9b[2J", "\u061c", "a\u200eb", "\u202e", "\u2028",
           "\u2029", "\u2066x", "\u2069", "\ufeffa", "é€😀", "a\u200db", "a\xa0b", "a\u00adb"]
    assert unaskable_ids(ids).tolist() == [id_problem(i, 128) is not None for i in ids]
    assert unaskable_ids(ids).sum() == 14  # a\u200db, a\u00adb: format characters (Cf)


def test_the_item_id_limit_follows_the_servers(tmp_path, monkeypatch):
    from server.limits import Limits
    from training.readers import ITEM_ID_BYTES
    assert ITEM_ID_BYTES == Limits().id_bytes
    f = _write(tmp_path / "i.csv", f"user_id,item_id,timestamp,event\nu1,{_LONG},1,view\n")
    monkeypatch.setenv("TAILOR_LIMITS__ID_BYTES", "200")  # a server configured for longer ids
    assert read_interactions(f)["item_id"].to_pylist() == [_LONG]
    monkeypatch.setenv("TAILOR_LIMITS__ID_BYTES", "140")
    with pytest.raises(ValueError, match="at most 140"):
        read_interactions(f)
    # the server's limits given as one JSON variable (TAILOR_LIMITS) count too
    monkeypatch.delenv("TAILOR_LIMITS__ID_BYTES")
    monkeypatch.setenv("TAILOR_LIMITS", '{"id_bytes": 200, "recommend_k": 50}')
    assert read_interactions(f)["item_id"].to_pylist() == [_LONG]
    monkeypatch.setenv("TAILOR_LIMITS", '{"recommend_k": 50}')
    with pytest.raises(ValueError, match=f"at most {ITEM_ID_BYTES}"):
        read_interactions(f)


@pytest.mark.parametrize("column", ["title", "url", "image"])
def test_a_title_or_link_longer_than_the_servers_limit_is_refused(tmp_path, monkeypatch, column):
    """One 1 MB title in a 600-item catalog was read: items.npz holds each text column at its
    longest entry's width, 2.4 GB (233 KB without it), training peaked at 9.8 GB and every
    server worker held 2.5 GB to serve 600 items. Refused at the limit UpsertItems applies
    (TAILOR_LIMITS__ITEM_TEXT_CHARS), naming the line, the field counted whatever its size."""
    from server.limits import Limits
    from training.readers import ITEM_TEXT_CHARS
    assert ITEM_TEXT_CHARS == Limits().item_text_chars
    long = "https://shop.example/" + "x" * 200_000
    f = _write(tmp_path / "items.csv", f"id,{column}\na,https://ok.example\nb,{long}\n")
    with pytest.raises(ValueError, match=rf"items.csv:3: column '{column}': .* is 200021 "
                                         rf"characters, at most {ITEM_TEXT_CHARS}"):
        read_items(f)
    monkeypatch.setenv("TAILOR_LIMITS__ITEM_TEXT_CHARS", "300000")   # the server's, raised
    assert read_items(f)[column][1] == long


@pytest.mark.parametrize("variable", ["tailor_limits__batch_users", "Tailor_Limits__Batch_Users",
                                      "TAILOR_LIMITS__BATCH_USERS"])
def test_a_limit_is_read_as_the_server_reads_it_whatever_the_case(monkeypatch, variable):
    """The server's settings take their variables in any case (pydantic-settings' default):
    a backtest reading only the upper-case name sized its batches at 500 users against a
    server that took 100, and every batch was refused whole."""
    from server.config import Settings
    from training.readers import server_limit
    monkeypatch.setenv(variable, "100")
    assert Settings().limits.batch_users == 100  # what the server the backtest starts takes
    assert server_limit("batch_users", 500) == 100


def test_parquet_ids_stored_as_floats_read_as_the_integers_they_hold(tmp_path):
    # pandas turns an integer id column with a missing value into float64; dropping those rows
    # keeps the float column: ids must come back as the integers the server is asked for
    # ("12345678901"), not as pyarrow's float text ("1.2345678901e+10")
    pq.write_table(pa.table({"user_id": [12345678901.0, 7.0], "item_id": [3.0, 40000000000.0],
                             "timestamp": [1, 2], "event": ["view", "view"]}),
                   tmp_path / "i.parquet")
    rows = read_interactions(tmp_path / "i.parquet")
    assert rows["user_id"].to_pylist() == ["12345678901", "7"]
    assert rows["item_id"].to_pylist() == ["3", "40000000000"]
    pq.write_table(pa.table({"id": [1.0, 2.0], "title": ["a", "b"]}), tmp_path / "items.parquet")
    assert read_items(tmp_path / "items.parquet")["id"].tolist() == ["1", "2"]


def test_parquet_ids_with_a_fraction_are_refused(tmp_path):
    pq.write_table(pa.table({"user_id": [1.0, 7.5], "item_id": [3, 4], "timestamp": [1, 2],
                             "event": ["view", "view"]}), tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"i.parquet: row 2, column 'user_id': 7.5 is not "
                                         r"a whole number"):
        read_interactions(tmp_path / "i.parquet")


@pytest.mark.parametrize("big", [2.0 ** 63, 1e20, -1e20])
def test_parquet_float_ids_beyond_int64_are_refused(tmp_path, big):
    # every such id became "-9223372036854775808" (only a numpy RuntimeWarning): all those
    # users merged into one
    pq.write_table(pa.table({"user_id": [2.0, big], "item_id": [3, 4], "timestamp": [1, 2],
                             "event": ["view", "view"]}), tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"i.parquet: row 2, column 'user_id': .* is beyond "
                                         r"a 64-bit integer"):
        read_interactions(tmp_path / "i.parquet")


def test_parquet_float_ids_at_the_int64_bounds_are_read(tmp_path):
    low, high = -2.0 ** 63, 2.0 ** 63 - 1024   # doubles are 1024 apart just below 2**63
    pq.write_table(pa.table({"user_id": [low, high], "item_id": [3, 4], "timestamp": [1, 2],
                             "event": ["view", "view"]}), tmp_path / "i.parquet")
    assert read_interactions(tmp_path / "i.parquet")["user_id"].to_pylist() == [
        str(-2 ** 63), str(2 ** 63 - 1024)]


def test_a_nan_parquet_float_id_is_an_empty_id(tmp_path):
    pq.write_table(pa.table({"user_id": [1.0, float("nan")], "item_id": [3, 4],
                             "timestamp": [1, 2], "event": ["view", "view"]}), tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"i.parquet: row 2, column 'user_id': empty id"):
        read_interactions(tmp_path / "i.parquet")


@pytest.mark.parametrize("name, text, where", [
    # a rating of inf ended the training on implicit's "NaN encountered in factors" traceback
    ("i.csv", "user_id,item_id,timestamp,event,value\nu1,a,1,rating,4\nu1,b,2,rating,inf\n",
     r"i.csv:3: column 'value': 'inf' is not a finite number"),
    ("i.csv", "user_id,item_id,timestamp,event,value\nu1,a,1,rating,-inf\n",
     r"i.csv:2: column 'value': '-inf' is not a finite number"),
    ("i.csv", "user_id,item_id,timestamp,event,value\nu1,a,1,rating,4\n\nu1,b,2,rating,1e39\n",
     r"i.csv:4: column 'value': '1e39' is not a finite number"),  # inf as float32
    # a price of 1e39 (inf as float32) failed only after the whole training, on "arrays hold
    # non-finite values"
    ("items.csv", "id,price\na,1.5\nb,1e39\n", r"items.csv:3: column 'price': '1e39' is not a finite"),
])
def test_numbers_that_are_not_finite_are_refused_naming_their_line(tmp_path, name, text, where):
    f = _write(tmp_path / name, text)
    read = {"i.csv": read_interactions, "items.csv": read_items}[name]
    with pytest.raises(ValueError, match=where):
        read(f)


def test_a_catalog_that_names_none_of_the_logs_items_is_refused(tmp_path):
    # ids of another scheme (SKUs vs product ids), or the wrong file: every item was trained
    # as category "unknown" without a title, url or price, and the bundle served them so
    rows = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\nu1,1,1,view\nu2,2,2,view\n")
    other = _write(tmp_path / "items.csv", "id,title,category\nSKU-1,a,x\nSKU-2,b,y\n")
    with pytest.raises(ValueError, match=r"items.csv: none of the 2 item ids of .*i.csv is in "
                                         r"the catalog \(2 items\): e.g. '1' .* 'SKU-1'"):
        load(rows, other)
    header = _write(tmp_path / "empty.csv", "id,title,category\n")
    with pytest.raises(ValueError, match=r"empty.csv: no data rows \(a header only\)"):
        load(rows, header)
    some = _write(tmp_path / "some.csv", "id,title,category\n1,a,x\n")  # one missing: trained
    inter, catalog = load(rows, some)
    assert catalog.item_ids.tolist() == ["1", "2"]
    assert catalog.category_names[catalog.category].tolist() == ["x", "unknown"]


@pytest.mark.parametrize("unit, per", [("ms", 10 ** 3), ("us", 10 ** 6), ("ns", 10 ** 9)])
def test_parquet_native_timestamps_with_fractions_of_a_second_are_floored(tmp_path, unit, per):
    # pandas writes event times as datetime64 with their milliseconds: pyarrow's safe cast to
    # seconds refused the whole file ("would lose data"), so such a log could not be trained
    ts = pa.array([1700000000 * per + per // 8, 1700000060 * per + per - 1], pa.timestamp(unit))
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": ts,
                             "event": ["view", "view"]}), tmp_path / "i.parquet")
    assert read_interactions(tmp_path / "i.parquet")["timestamp"].tolist() == [1700000000,
                                                                               1700000060]
    ts = pa.array([1700000000 * per, None], pa.timestamp(unit, tz="UTC"))
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": ts,
                             "event": ["view", "view"]}), tmp_path / "i.parquet")
    with pytest.raises(ValueError, match=r"row 2, column 'timestamp': '' is neither"):
        read_interactions(tmp_path / "i.parquet")


@pytest.mark.parametrize("text, where", [
    ('id,url\na,/p/a\nb,"javascript:alert(1)"\n',
     r"items.csv:3: column 'url': 'javascript:alert'\.\.\. scheme 'javascript' can run script"),
    ('id,url\na,/p/a\nb," javascript:alert(1)"\n',  # a browser strips the space first
     r"items.csv:3: column 'url': .* scheme 'javascript' can run script"),
    ('id,image\na,https://cdn/a.jpg\nb,"DATA:image/png;base64,AA"\n',
     r"items.csv:3: column 'image': .* scheme 'DATA' can run script"),
    ('id,url\na,"/p/a\rBcc: x@example.com"\n', r"items.csv:2: column 'url': .* control character"),
])
def test_catalog_links_a_page_or_email_cannot_carry_are_refused(tmp_path, text, where):
    # the server refuses a bundle holding one (items.npz: urls / images), as UpsertItems does
    with pytest.raises(ValueError, match=where):
        read_items(_write(tmp_path / "items.csv", text))
    fine = read_items(_write(tmp_path / "ok.csv", "id,url,image\na,https://x/a,//cdn/a.jpg\n"
                                                  "b,p/b,\nc,HTTP://x/c,/i/c.png\n"))
    assert fine["url"].tolist() == ["https://x/a", "p/b", "HTTP://x/c"]


def test_a_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    # Excel's "CSV UTF-8" starts with a BOM: the header's first name did not match, the ids were
    # typed as numbers and the read died on pyarrow's "no kernel matching input types (int64)"
    bom = "\ufeff"
    rows = _write(tmp_path / "i.csv", bom + "user_id,item_id,timestamp,event\r\n007,5,1,view\r\n")
    got = read_interactions(rows)
    assert got["user_id"].to_pylist() == ["007"] and got["item_id"].to_pylist() == ["5"]
    items = _write(tmp_path / "items.csv", bom + "id,title\r\n05,a\r\n")
    assert read_items(items)["id"].tolist() == ["05"]


def test_a_nan_cell_is_a_missing_number_as_an_empty_cell_is(tmp_path):
    # a NaN price also failed only after the whole training; NaN is how many tools write a
    # missing number (a view's revenue), so it reads as the empty cell does: 0
    rows = read_interactions(_write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n"
                                                       "u1,a,1,view,NaN\nu1,b,2,purchase,nan\n"))
    assert rows["value"].tolist() == [0.0, 0.0]
    assert read_items(_write(tmp_path / "items.csv", "id,price\na,1.5\nb,NaN\n"))["price"].tolist() \
        == [1.5, 0.0]


def test_csv_ids_written_as_floats_read_as_the_integers_they_hold(tmp_path):
    # pandas writes an integer id column that had a missing value (float64) as "12345678901.0"
    # (and from 1e16 as "1.2345678901234568e+16"): those ids trained as "12345678901.0", which
    # no caller asks for (every such user served as cold), while the same frame saved as
    # Parquet reads as "12345678901"
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event,value\n"
               "12345678901.0,3,1,view,0.0\n7.0,40000000000,2,view,0.0\n"
               "1.2345678901234568e+16,3,3,view,0.0\n")
    rows = read_interactions(f, float_ids=True)
    assert rows["user_id"].to_pylist() == ["12345678901", "7", "12345678901234568"]
    assert rows["item_id"].to_pylist() == ["3", "40000000000", "3"]
    _write(tmp_path / "items.csv", "id,title\n3.0,a\n40000000000.0,b\n")
    assert read_items(tmp_path / "items.csv", float_ids=True)["id"].tolist() == ["3", "40000000000"]


def test_csv_ids_written_as_floats_stay_as_written_unless_asked(tmp_path, caplog):
    # the server may know a user as "12.0" (a client formatting floats; `training export`
    # writes ids as tracked): read so by default, with a WARNING naming --float-ids
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\n12.0,3,1,view\n7,3,2,view\n")
    with caplog.at_level("WARNING", logger="tailor.training.readers"):
        assert read_interactions(f)["user_id"].to_pylist() == ["12.0", "7"]
    assert "--float-ids" in caplog.text


@pytest.mark.parametrize("ids", [["1.0", "1.5"], ["v1.0", "2.0"], ["1.0", "1e400"], ["007", "7"]])
def test_csv_ids_that_are_not_all_whole_numbers_stay_as_written(tmp_path, ids):
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\n"
               + "".join(f"{u},a,1,view\n" for u in ids))
    assert read_interactions(f, float_ids=True)["user_id"].to_pylist() == ids


def test_ids_with_surrounding_spaces_are_read_as_the_server_has_them(tmp_path, caplog):
    # the server takes "5 " and "5" as two users (TrackEvents, erasure, Recommend); the reader
    # trimmed "5 " to "5": its rows served user "5", and a tombstone of the erased "5 " (keyed
    # hash of "5 ") matched no row, so the erased user's rows were trained on
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\n"
               "5 ,a,1,view\n5,a,2,view\n u7,b ,3,view\n")
    with caplog.at_level("WARNING", logger="tailor.training.readers"):
        rows = read_interactions(f)
    assert rows["user_id"].to_pylist() == ["5 ", "5", " u7"]
    assert rows["item_id"].to_pylist() == ["a", "a", "b "]
    assert "2 rows whose id has leading or trailing whitespace" in caplog.text
    logged = " ".join(r.getMessage() for r in caplog.records)   # not caplog.text: its
    assert "5 " not in logged.split("whitespace")[0]   # readers.py:325 would hold "5 "; no id
    _write(tmp_path / "items.csv", "id,title\nb ,x\n")
    assert read_items(tmp_path / "items.csv")["id"].tolist() == ["b "]
    _write(tmp_path / "empty.csv", "user_id,item_id,timestamp,event\n,a,1,view\n")
    with pytest.raises(ValueError, match=r"empty.csv:2: column 'user_id': empty id"):
        read_interactions(tmp_path / "empty.csv")


def test_blank_ids_are_read_as_written_and_counted(tmp_path, caplog):
    # the server takes " " as a user and an item id (TrackEvents; `training export` writes it
    # as tracked): refusing it as an empty one refused the whole export, so every retrain
    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\n"
               "  ,a,1,view\nu1, ,2,view\nu1,a,3,view\n")
    with caplog.at_level("WARNING", logger="tailor.training.readers"):
        rows = read_interactions(f)
    assert rows["user_id"].to_pylist() == ["  ", "u1", "u1"]
    assert rows["item_id"].to_pylist() == ["a", " ", "a"]
    assert "'user_id': 1 rows whose id has leading or trailing whitespace" in caplog.text
    assert "'item_id': 1 rows whose id has leading or trailing whitespace" in caplog.text
    _write(tmp_path / "r.dat", "1::10::5::1\n1:: ::4::2\n")   # MovieLens: trimmed, so empty
    with pytest.raises(ValueError, match=r"r.dat:2: column 'item_id': empty id"):
        read_movielens(tmp_path / "r.dat")


async def test_an_export_holding_a_blank_user_and_item_trains(tailor_server, tmp_path):
    import asyncio
    import time

    from clients import TailorClient
    from tests.conftest import run_module

    target = f"127.0.0.1:{tailor_server.port}"
    users, items = ["u1", "u2", " ", "u3", "u4"], ["i0", "i1", " ", "i2", "i3", "i4"]
    events = [{"event_id": f"b-{u}-{i}", "user_id": users[u], "item_id": items[i],
               "type": "click", "timestamp": time.time() - 86400 + 10 * u + i}
              for u in range(len(users)) for i in range(len(items)) if (u + i) % 3]
    out = tmp_path / "export" / "interactions.csv"

    def flow():
        with TailorClient(target, timeout=60) as client:
            assert client.track(events).accepted == len(events)
        run_module("training", "export", "--server", target, "--out", str(out))
        return run_module("training", "train", "--interactions", str(out), "--out",
                          str(tmp_path / "b"), "--iterations", "2", "--no-ranker",
                          "--no-report", check=False)
    proc = await asyncio.to_thread(flow)
    assert proc.returncode == 0, proc.stderr
    (bundle,) = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
    with np.load(bundle / "users.npz") as users_npz, np.load(bundle / "items.npz") as items_npz:
        assert " " in users_npz["user_ids"].tolist()
        assert " " in items_npz["item_ids"].tolist()


def test_the_erasure_of_a_user_whose_id_ends_in_a_space_drops_their_rows(tmp_path):
    from contract.erasure import digest
    from training.erasure import drop_erased

    f = _write(tmp_path / "i.csv", "user_id,item_id,timestamp,event\n"
               "5 ,a,1,view\n5 ,b,2,view\n6,a,3,view\n")
    key = ("k1", b"k" * 32)
    tombs = {(key[0], digest(key[1], "5 ")): 100.0}
    kept, dropped = drop_erased(read_interactions(f), tombs, [key])
    assert dropped == 2 and kept["user_id"].to_pylist() == ["6"]


async def test_an_export_holding_an_item_id_refused_since_trains_without_its_events(
        tailor_server, tmp_path):
    """Events tracked before ids with a bidirectional control were refused stay stored (for
    the retention window): `training export` wrote their item id and `train` refused the whole
    file for it (the reader refuses an item id the server cannot name), so every retrain failed
    until they expired. The export leaves such events out and says how many."""
    import asyncio
    import time

    from clients import TailorClient
    from server.profiles.events import TrackedEvent
    from tests.conftest import run_module

    target = f"127.0.0.1:{tailor_server.port}"
    now = time.time() - 86400
    events = [{"event_id": f"x-{u}-{i}", "user_id": f"u{u}", "item_id": f"i{i}", "type": "click",
               "timestamp": now + 10 * u + i} for u in range(5) for i in range(6) if (u + i) % 3]
    old = TrackedEvent("x-old", "u1", "click", "web", "", "gpj.\u202eexe", 0.0, now)
    await asyncio.to_thread(tailor_server.profiles.repo.ingest, [old], [None])
    out = tmp_path / "export" / "interactions.csv"

    def flow():
        with TailorClient(target, timeout=60) as client:
            assert client.track(events).accepted == len(events)
        done = run_module("training", "export", "--server", target, "--out", str(out))
        return done, run_module("training", "train", "--interactions", str(out), "--out",
                                str(tmp_path / "b"), "--iterations", "2", "--no-ranker",
                                "--no-report", check=False)
    exported, trained = await asyncio.to_thread(flow)
    assert trained.returncode == 0, trained.stderr
    assert "1 events whose item id no id may hold now" in exported.stdout
    assert "\u202e" not in out.read_text()
