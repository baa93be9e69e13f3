import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import sparse


def _states(rng, rows, size, density):
    states = rng.normal(size=(rows, size)) * (rng.random((rows, size)) < density)
    states[:, 0] = np.inf  # special values survive bit for bit
    if size > 2:
        states[:, 2] = -0.0  # negative zero counts as zero
    return states


@given(rows=st.integers(0, 20), size=st.integers(1, 900), density=st.floats(0, 1), seed=st.integers(0, 10**6))
@settings(max_examples=60, deadline=None)
def test_native_and_reference_write_the_same_records_and_round_trip(rows, size, density, seed):
    states = _states(np.random.default_rng(seed), rows, size, density)
    native, reference = sparse.encode_rows(states), sparse.encode_rows(states, use_native=False)
    assert native == reference
    for use_native in (True, False):
        out = np.full((rows, size), 7.0)
        sparse.decode_rows(native, out, use_native=use_native)
        np.testing.assert_array_equal(out, np.where(states == 0, 0.0, states))


def test_records_are_small_for_sparse_rows():
    states = np.zeros((1, 800))
    states[0, [3, 50, 700]] = [1.5, -2.0, 3.0]
    (record,) = sparse.encode_rows(states)
    assert len(record) == 4 + 3 * 10


@pytest.mark.parametrize("use_native", [True, False])
def test_empty_records_leave_rows_alone_and_bad_records_are_refused(use_native):
    out = np.full((2, 5), 9.0)
    good = sparse.encode_rows(np.array([[0, 1.0, 0, 0, 2.0]]))[0]
    sparse.decode_rows([None, good], out, use_native=use_native)
    np.testing.assert_array_equal(out, [[9.0] * 5, [0, 1.0, 0, 0, 2.0]])
    for bad in (b"XX\x00\x00", good[:-1], b"S1\x09\x00" + b"\x00" * 90):
        with pytest.raises(ValueError, match=r"records\[0\]"):
            sparse.decode_rows([bad], np.zeros((1, 5)), use_native=use_native)


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="states"):
        sparse.encode_rows(np.zeros(5))
    with pytest.raises(ValueError, match="records"):
        sparse.decode_rows([None], np.zeros((2, 5)))


@pytest.mark.parametrize("use_native", [True, False])
def test_records_may_be_any_bytes_like(use_native):
    states = np.array([[0, 1.5, 0, -2.0], [3.0, 0, 0, 0]])
    records = [memoryview(r) for r in sparse.encode_rows(states)]
    decoded = sparse.decode_rows(records, np.full((2, 4), 9.0), use_native=use_native)
    np.testing.assert_array_equal(decoded, states)
