"""Feature-state records: the chunked update equals one update over the whole batch."""
import numpy as np
import pytest

from kernels import feature_layout as fl
from kernels import features as kf
from server.profiles import ProfileSchema, codec


def _events(rng, n):
    return kf.Events(type=rng.integers(0, 4, n), channel=rng.integers(0, 2, n),
                     ts=1.7e9 + rng.uniform(0, 86400, n), item=rng.integers(0, 50, n),
                     value=rng.uniform(0, 5, n))


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_update_records_in_chunks_matches_one_dense_update(monkeypatch, chunk):
    layout, rng = ProfileSchema().layout(), np.random.default_rng(7)
    seeded = codec.encode_states(kf.update_many(layout, fl.new_states(layout, 7), rng.integers(0, 7, 30),
                                                _events(rng, 30)))
    records = [seeded[i] if i % 3 else None for i in range(7)]
    rows, events = rng.integers(0, 7, 200), _events(rng, 200)
    expected = codec.encode_states(kf.update_many(layout, codec.decode_states(layout, records), rows, events))
    monkeypatch.setattr(codec, "CHUNK_USERS", chunk)
    assert codec.update_records(layout, records, rows, events) == expected
