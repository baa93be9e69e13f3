"""The manifest's optional `drift` key (contract.drift): typed when valid, refused by name."""
import pytest

from contract import BundleError, parse_manifest
from contract.drift import DRIFT_FORMAT

from .test_bundle import manifest

REFERENCE = {"format": DRIFT_FORMAT, "n_users": 3, "k": 10, "features": {
    "history_len": {"edges": [2.0, 5.0], "counts": [1, 1, 1]},
    "history_category": {"categorical": True, "counts": [4, 0, 2]}}}


def test_a_bundle_without_a_reference_stays_valid():
    assert parse_manifest(manifest()).drift is None


def test_a_reference_is_typed_per_feature():
    drift = parse_manifest(manifest(drift=REFERENCE)).drift
    assert drift["history_len"].edges == (2.0, 5.0) and drift["history_len"].n_bins == 3
    assert drift["history_category"].categorical and drift["history_category"].counts == (4, 0, 2)


@pytest.mark.parametrize("feature, where", [
    ({"edges": [2.0], "counts": [1, 1, 1]}, "edges"),            # 3 bins need 2 edges
    ({"edges": [5.0, 2.0], "counts": [1, 1, 1]}, "edges"),       # not increasing
    ({"edges": [], "counts": [-1]}, "counts"),
    ({"categorical": True, "edges": [1.0], "counts": [1, 1]}, "edges"),
    ({"edges": [], "counts": "many"}, "counts"),
])
def test_a_bad_histogram_is_refused_naming_the_key(feature, where):
    bad = {**REFERENCE, "features": {"history_len": feature}}
    with pytest.raises(BundleError) as err:
        parse_manifest(manifest(drift=bad))
    assert err.value.where == f"manifest.json: drift.features.history_len.{where}"


def test_an_unknown_format_is_refused():
    with pytest.raises(BundleError, match="drift.format"):
        parse_manifest(manifest(drift={**REFERENCE, "format": 99}))
