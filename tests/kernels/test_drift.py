"""kernels.drift: PSI and fixed-edge binning, against values worked out by hand."""
import math

import numpy as np
import pytest

from kernels.drift import PSI_FLOOR, bin_columns, pad_edges, psi, quantile_edges


def test_psi_of_a_two_bin_shift_matches_the_hand_computation():
    # shares p = (0.5, 0.5), q = (0.9, 0.1):
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5) = 0.4 ln 1.8 + 0.4 ln 5
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5.0))
    assert psi([50, 50], [90, 10]) == pytest.approx(0.878890, abs=1e-6)


def test_psi_is_zero_for_equal_shares_whatever_the_totals_and_symmetric():
    assert psi([1, 2, 3], [100, 200, 300]) == pytest.approx(0.0, abs=1e-15)
    assert psi([10, 30], [30, 10]) == pytest.approx(psi([30, 10], [10, 30]))
    # (0.75 - 0.25) ln 3 twice
    assert psi([10, 30], [30, 10]) == pytest.approx(2 * 0.5 * math.log(3.0))


def test_an_empty_bin_counts_with_the_floor():
    # p = (1, floor), q = (floor, 1): 2 (1 - floor) ln(1 / floor)
    expected = 2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR)
    assert psi([7, 0], [0, 3]) == pytest.approx(expected)
    assert psi([5, 0], [9, 0]) == pytest.approx(0.0, abs=1e-15)


def test_psi_is_batched_over_leading_axes_and_nan_without_values():
    out = psi([[50, 50], [1, 1], [3, 1]], [[90, 10], [0, 0], [3, 1]])
    assert out.shape == (3,)
    assert out[0] == pytest.approx(0.878890, abs=1e-6) and math.isnan(out[1]) and out[2] == 0


@pytest.mark.parametrize("expected, actual", [([1, 2], [1, 2, 3]), ([-1, 2], [1, 2]), ([], [])])
def test_psi_refuses_mismatched_or_negative_counts(expected, actual):
    with pytest.raises(ValueError):
        psi(expected, actual)


def test_bins_are_right_closed_counts_of_edges_at_or_below_the_value():
    edges = pad_edges([[1.0, 2.0], [0.0]])  # feature 0: 3 bins, feature 1: 2 bins
    values = np.array([[0.5, -1.0], [1.0, 0.0], [1.5, 3.0], [2.0, np.nan], [9.0, 0.0]])
    assert bin_columns(values, edges).tolist() == [[0, 0], [1, 1], [1, 1], [2, 0], [2, 1]]
    for f in range(2):  # the same as searchsorted(side="right") where defined
        col = values[:, f]
        ok = np.isfinite(col)
        real = edges[f][np.isfinite(edges[f])]
        assert (bin_columns(values, edges)[ok, f]
                == np.searchsorted(real, col[ok], side="right")).all()


def test_quantile_edges_split_mass_evenly_and_merge_ties():
    assert quantile_edges(np.arange(1, 101), 4).tolist() == [25.75, 50.5, 75.25]
    # positions q (n - 1) = 5/3 and 10/3 of [0, 0, 0, 0, 1, 2]: 0 and 0 + 1/3 (1 - 0)
    assert quantile_edges([0, 0, 0, 0, 1, 2], 3) == pytest.approx([0.0, 1 / 3])
    assert quantile_edges([5, 5, 5], 10).tolist() == [5.0]  # nine tied quantiles, one edge
    assert quantile_edges([], 10).size == 0 and quantile_edges([np.inf], 4).size == 0
    with pytest.raises(ValueError):
        quantile_edges([1.0], 0)
