"""`server.attribution.wire_size` against the bytes the real converter's AttributeResponse
takes: exact for path_credits, stored_paths and the transition matrix."""
import numpy as np
import pytest
from google.protobuf.internal.encoder import _VarintBytes

from kernels.attribution import Paths, attribute
from protos.tailor.v1 import attribution_pb2 as pb
from server.attribution.handler import AttributionResult
from server.attribution.spec import ModelSpec
from server.attribution.wire_size import credits_bytes, matrix_bytes, per_touch_bytes
from server.services.attribution import AttributionConverter


def framed(messages) -> int:
    """Bytes of `messages` as a repeated message field numbered below 16."""
    return sum(1 + len(_VarintBytes(m.ByteSize())) + m.ByteSize() for m in messages)


def random_paths(rng, timed: bool) -> Paths:
    n = int(rng.integers(1, 2000))
    seqs = [[f"ch{'é' * int(rng.integers(0, 100))}{c}" for c in rng.integers(0, 40, k)]
            for k in rng.integers(1, 9, n)]
    ts = [rng.uniform(0, 1e9, len(s)).tolist() for s in seqs] if timed else None
    return Paths.from_sequences(seqs, rng.integers(0, 3, n).astype(float),
                                rng.choice([0.0, 1.5, -0.0], n),
                                rng.integers(0, 2, n).astype(float), timestamps=ts)


@pytest.mark.parametrize("seed", range(6))
def test_sizes_are_those_of_the_converted_answer(seed):
    rng = np.random.default_rng(seed)
    paths = random_paths(rng, timed=seed % 2 == 1)
    res = attribute(paths, "markov", order=1 + seed % 3, path_credits=True,
                    transition_matrix=True)
    for stored in (False, True):
        out = AttributionConverter.from_result(
            AttributionResult(ModelSpec(model="markov"), paths, res, 0, 0, stored=stored),
            pb.MARKOV)
        assert per_touch_bytes(paths, stored) == framed(out.path_credits) + framed(
            out.stored_paths)
    matrix = pb.AttributeResponse(transition_matrix=out.transition_matrix).ByteSize()
    assert matrix_bytes(res.details["states"], res.details["transition_matrix"]) == matrix


@pytest.mark.parametrize("model, kw", [
    ("markov", {"order": 2}), ("shapley", {"shapley_form": "ordered"}),
    ("shapley", {"shapley_form": "rate", "samples": 50}), ("linear", {})])
def test_channel_credits_are_those_of_the_converted_answer(model, kw):
    paths = random_paths(np.random.default_rng(7), timed=False)
    res = attribute(paths, model, **kw)
    out = AttributionConverter.from_result(
        AttributionResult(ModelSpec(model=model), paths, res, 0, 0), 0)
    assert credits_bytes(res) == framed(out.credits)
