"""kernels.exclusion.one_user: the Cython kernel against its numpy reference, and a case by hand."""
import numpy as np
import pytest

from kernels.exclusion import Rule, one_user

DAY = 86400.0
NOW = 1_900_000_000.0
# bit 0 (purchase) for good; bit 1 (view) for 30 days; bits 1 and 2 (click) for 7 days
RULE = Rule.of(0b001, [(7 * DAY, 0b110), (30 * DAY, 0b010)])
NO_RULE = Rule.of(0, [])


def _both(*args):
    return [one_user(*args, use_native=native) for native in (True, False)]


@pytest.mark.parametrize("seed", range(4))
def test_kernel_equals_reference(seed):
    """Repeats within and across sources, codes the catalog lacks, repeatable rows, times on
    each window's edge, NaN times, empty sources, an empty catalog and empty rules."""
    rng = np.random.default_rng(seed)
    for _ in range(300):
        n_items = int(rng.integers(1, 60))
        codes = rng.choice(10_000, n_items, replace=False).astype(np.int64)
        order = np.argsort(codes, kind="stable")
        codes_sorted, code_order = codes[order], order.astype(np.int64)
        if rng.random() < 0.05:
            codes_sorted, code_order = codes_sorted[:0], code_order[:0]
        repeatable = rng.random(n_items) < 0.2
        ages = [0.0, 7 * DAY, 7 * DAY - 1, 30 * DAY, 30 * DAY + 1, 400 * DAY, -DAY, np.nan]
        ns, nl, nr = (int(rng.integers(0, 25)) for _ in range(3))
        seen = (rng.integers(0, n_items, ns), rng.integers(0, 8, ns).astype(np.uint32),
                NOW - rng.choice(ages, ns))
        live_codes = np.sort(rng.choice(np.concatenate([codes, [20_000, 20_001]]), nl))
        live = (live_codes, rng.integers(0, 8, nl).astype(np.uint32), NOW - rng.choice(ages, nl))
        requested = rng.integers(0, n_items, nr)
        rule = RULE if rng.random() < 0.8 else NO_RULE
        native, reference = _both(requested, *seen, rule, *live, rule, codes_sorted, code_order,
                                  repeatable, NOW)
        assert native.dtype == np.int64
        assert native.tolist() == reference.tolist()


def test_by_hand():
    """Catalog rows 0-4 with codes 50, 10, 40, 20, 30 (sorted: 10 20 30 40 50 -> rows 1 3 4 2
    0); row 4 repeatable. Requested: row 2. Bundle: row 0 purchased 400 days ago (for good:
    out), row 1 viewed 8 days ago (30-day window: out), row 3 clicked 8 days ago (7 days
    passed: in), row 4 purchased (repeatable: in). Live: code 30 (row 4) purchased (repeatable:
    in), code 20 (row 3) clicked now (out), code 99 (not in the catalog) purchased (ignored).
    Excluded: rows 0, 1, 2, 3."""
    codes = np.array([50, 10, 40, 20, 30])
    order = np.argsort(codes)
    repeatable = np.array([False, False, False, False, True])
    for native in (True, False):
        rows = one_user([2], [0, 1, 3, 4], np.array([1, 2, 4, 1], np.uint32),
                        [NOW - 400 * DAY, NOW - 8 * DAY, NOW - 8 * DAY, NOW], RULE,
                        [20, 30, 99], np.array([4, 1, 1], np.uint32), [NOW, NOW, NOW], RULE,
                        codes[order], order, repeatable, NOW, use_native=native)
        assert rows.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("native", [True, False])
def test_rows_outside_the_catalog_are_refused(native):
    with pytest.raises(ValueError, match="outside"):
        one_user([], [5], np.array([1], np.uint32), [NOW], RULE, [], np.zeros(0, np.uint32), [],
                 RULE, [10], [0], np.zeros(3, bool), NOW, use_native=native)
    with pytest.raises(ValueError, match="one length"):
        one_user([], [1, 2], np.array([1], np.uint32), [NOW], RULE, [], np.zeros(0, np.uint32),
                 [], RULE, [10], [0], np.zeros(3, bool), NOW, use_native=native)
