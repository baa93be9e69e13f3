"""The content map a training writes (content.npz, manifest `content`) and how the server reads
bundles with and without it."""
import json
import shutil

import numpy as np
import pytest

from contract import sha256_file
from kernels.content import ContentSpace, features
from server.catalog.overlay import amend
from server.catalog.records import CatalogItem
from server.models.bundle import BundleInvalid, load_bundle


def test_bundle_carries_the_content_map_and_segment_metrics(demo_bundle, demo_manifest):
    entry = demo_manifest["content"]
    assert entry["file"] == "content.npz" and "content.npz" in demo_manifest["files"]
    assert entry["fit_r2"] > 0.0 and entry["n_vocabulary"] > 0
    segments = demo_manifest["metrics"]["segments"]
    assert {"new", "returning", "activity 1-4"} <= set(segments)
    assert (segments["new"]["n_users"] + segments["returning"]["n_users"]
            == demo_manifest["metrics"]["n_eval_users"])
    bundle = load_bundle(demo_bundle)
    assert isinstance(bundle.content, ContentSpace)
    assert bundle.content.ridge.shape == (bundle.content.n_features, bundle.dim)


def test_served_vector_of_a_new_item_is_the_ridge_map_of_its_content(demo_bundle):
    bundle = load_bundle(demo_bundle)
    cat = str(bundle.items["category_names"][0])
    served = amend(bundle, [CatalogItem("fresh", "smart red kit", cat, 12.5, seq=1, at=1.0)], 1)
    x = features(np.array([0]), np.array([12.5]), ["smart red kit"], bundle.content)
    expected = x @ bundle.content.ridge.astype(np.float64) + bundle.content.bias
    row = served.item_row["fresh"]
    assert row == bundle.n_items and served.trained is bundle
    np.testing.assert_allclose(served.vectors[row], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.index.reconstruct(row), expected[0], rtol=1e-5, atol=1e-6)
    assert served.items["popularity"][row] == 0 and served.items["category"][row] == 0
    assert bundle.n_items == served.n_items - 1  # the trained bundle is left as it was


def test_update_of_a_trained_item_applies_only_when_newer_than_the_bundle(demo_bundle):
    bundle = load_bundle(demo_bundle)
    item = str(bundle.items["item_ids"][0])
    row, cat = bundle.item_row[item], str(bundle.items["category_names"][0])
    old = amend(bundle, [CatalogItem(item, "old title", cat, 1.0, seq=1, at=1.0)], 1)
    new = amend(bundle, [CatalogItem(item, "new title", cat, 1.0, seq=1, at=4e9)], 1)
    assert old.items["titles"][row] == bundle.items["titles"][row]
    assert new.items["titles"][row] == "new title" and new.items["price"][row] == 1.0
    np.testing.assert_array_equal(new.vectors[row], bundle.vectors[row])


def test_bundle_without_a_content_map_loads_and_embeds_by_category_mean(demo_bundle, tmp_path):
    older = tmp_path / demo_bundle.name
    shutil.copytree(demo_bundle, older)
    (older / "content.npz").unlink()
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["content"], manifest["files"]["content.npz"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(older)
    assert bundle.content is None
    served = amend(bundle, [CatalogItem("fresh", "t", str(bundle.items["category_names"][2]), 1.0,
                                        seq=1, at=1.0)], 1)
    warm = (bundle.item_category == 2) & (bundle.items["popularity"] > 0)
    np.testing.assert_allclose(served.vectors[-1], bundle.vectors[warm].mean(axis=0), rtol=1e-5)


def test_content_map_of_the_wrong_shape_is_refused(demo_bundle, tmp_path):
    bad = tmp_path / demo_bundle.name
    shutil.copytree(demo_bundle, bad)
    with np.load(bad / "content.npz") as npz:
        arrays = dict(npz)
    arrays["ridge"] = arrays["ridge"][:-1]
    np.savez(bad / "content.npz", **arrays)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["content.npz"] = sha256_file(bad / "content.npz")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleInvalid, match="content.npz: ridge"):
        load_bundle(bad)
