"""kernels.history.blend: the Cython kernel against its numpy reference, and one case by hand."""
import numpy as np
import pytest

from kernels.history import blend

DAY = 86400.0
NOW = 1_900_000_000.0
TERMS = dict(half_life_s=30 * DAY, long_half_life_s=365 * DAY, session_s=1800.0)


def _both(rows, w, ts, length, mass):
    return [blend(rows, w, ts, NOW, length, background_mass=mass, use_native=native, **TERMS)
            for native in (True, False)]


@pytest.mark.parametrize("seed", range(6))
def test_kernel_equals_reference(seed):
    """Repeated rows, equal weights and times (ties), zero and negative weights, future
    times, times on the session's edge, a background over and under the cap, histories longer
    and shorter than `length`."""
    rng = np.random.default_rng(seed)
    for _ in range(300):
        n = int(rng.integers(0, 120))
        rows = rng.integers(0, max(1, n // 2 + 1), n)
        w = rng.choice([0.0, -1.0, 1.0, 2.0, 4.0, rng.uniform(0, 9)], n)
        ts = NOW - rng.choice([0.0, -30.0, 60.0, 1800.0, 3 * DAY, 90 * DAY,  # 1800: the session's edge
                               rng.uniform(0, 400 * DAY)], n)
        length, mass = int(rng.integers(0, 60)), float(rng.choice([0.0, 5.0, 16.0, 1e9]))
        (k_rows, k_w), (r_rows, r_w) = _both(rows, w, ts, length, mass)
        assert k_rows.dtype == np.int64 and k_w.dtype == np.float32
        assert k_rows.tolist() == r_rows.tolist()
        np.testing.assert_allclose(k_w, r_w, rtol=1e-6)


def test_by_hand():
    """Row 5 twice (3 and 1 days old), row 7 once (2 days), row 9 now; weights 1, 0.5, 2, 4;
    a cap of 5 on what is older than the session; the 2 heaviest kept, oldest first.
    Decayed: d(w, a) = w (2^(-a/30) + 2^(-a/365)), so row 5: d(1, 3) + d(0.5, 1) = 2.9150,
    row 7: d(2, 2) = 3.9021, row 9: d(4, 0) = 8. Rows 5 and 7 (6.8171) are scaled by 5/6.8171:
    2.1380 and 2.8620; the heaviest two are 9 and 7, and 7 is the older."""
    d = lambda w, a: w * (2 ** (-a / 30) + 2 ** (-a / 365))  # noqa: E731
    rows, w = blend(np.array([5, 7, 5, 9]), np.array([1.0, 2.0, 0.5, 4.0]),
                    np.array([NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY, NOW]), NOW, 2,
                    background_mass=5.0, **TERMS)
    assert rows.tolist() == [7, 9]
    old = d(1, 3) + d(0.5, 1) + d(2, 2)
    np.testing.assert_allclose(w, [d(2, 2) * 5 / old, 8.0], rtol=1e-6)


@pytest.mark.parametrize("native", [True, False])
def test_refuses_mismatched_lengths_and_values_no_order_can_sort(native):
    with pytest.raises(ValueError, match="one length"):
        blend(np.array([1, 2]), np.array([1.0]), np.array([NOW, NOW]), NOW, 5,
              background_mass=0.0, use_native=native, **TERMS)
    for w, ts in (([1.0, np.nan], [NOW, NOW]), ([1.0, 1.0], [NOW, np.inf])):
        with pytest.raises(ValueError, match="finite"):
            blend(np.array([1, 2]), np.array(w), np.array(ts), NOW, 5, background_mass=0.0,
                  use_native=native, **TERMS)
    with pytest.raises(ValueError, match="2\\^53"):
        blend(np.array([1, 2 ** 53]), np.ones(2), np.full(2, NOW), NOW, 5, background_mass=0.0,
              use_native=native, **TERMS)
