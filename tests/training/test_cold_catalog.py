"""Catalog items nobody interacted with (issue 21, cold items): every fit gives them their
content vector before the index is built (`training.content.embed_cold`), so the server
recommends them; an item whose content tells the map nothing keeps the zero vector."""
import logging

import numpy as np
import pytest

from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from server.catalog.overlay import amend
from server.catalog.records import CatalogItem
from server.models.bundle import load_bundle
from tests.conftest import server_settings, serving
from training.als import ALSParams
from training.bundle import write_bundle
from training.content import ContentParams
from training.events import Catalog
from training.pipeline import TrainConfig, train

from .conftest import make_interactions

N = 20
SNACKS, TOOLS = [f"s{i}" for i in range(N)], [f"t{i}" for i in range(N)]
FRESH = "s-new"
"""A snack nobody bought: the snacks' category and title words."""
BARE = "x-bare"
"""Nobody bought it either, and its content says nothing: a category without warm items, no
title word of the vocabulary, the price every item has (one price band)."""
ITEMS = SNACKS + TOOLS + [FRESH, BARE]
CONFIG = TrainConfig(als=ALSParams(factors=8, iterations=10, threads=1), use_ranker=False,
                     drift_users=0, eval_users=0)


def _world():
    """30 snack and 30 tool buyers, 12 purchases each; FRESH and BARE never bought."""
    rng = np.random.default_rng(3)
    rows = [(f"u{u:02d}", (SNACKS if u < 30 else TOOLS)[j], 1_700_000_000 + 3600 * t, "purchase")
            for u in range(60) for t, j in enumerate(rng.choice(N, 12, replace=False))]
    titles = ([f"crunchy salty snack {i}" for i in range(N)]
              + [f"steel hand tool {i}" for i in range(N)] + ["crunchy salty snack", "qx"])
    names, codes = np.unique(["snacks"] * N + ["tools"] * N + ["snacks", "misc"],
                             return_inverse=True)
    catalog = Catalog(np.array(ITEMS), np.array(titles), np.full(len(ITEMS), ""),
                      codes.astype(np.int32), names, np.full(len(ITEMS), 10.0, np.float32))
    return make_interactions(rows, item_ids=ITEMS), catalog


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.fixture(scope="module")
def trained_cold(world):
    return train(*world, CONFIG)


@pytest.fixture(scope="module")
def cold_bundle(trained_cold, tmp_path_factory):
    return write_bundle(trained_cold, tmp_path_factory.mktemp("cold-bundles"))


async def test_an_item_nobody_bought_is_recommended_from_its_content(cold_bundle, tmp_path):
    async with serving(server_settings(tmp_path, cold_bundle)) as (_, ch):
        stub = pb_grpc.RecommendationServiceStub(ch)
        replies = [await stub.Recommend(pb.RecommendRequest(user_id=f"u{u:02d}", k=len(ITEMS)))
                   for u in range(30)]
    for reply in replies:   # bought snacks are excluded for good: 8 left, FRESH among them
        ids = [i.item_id for i in reply.items]
        assert not reply.cold_start and ids.index(FRESH) < 9, ids
        assert ids.index(FRESH) < min(ids.index(t) for t in TOOLS + [BARE])


def test_the_manifest_counts_the_content_embedded_items(trained_cold, cold_bundle):
    cold = {"items": 2, "content_embedded": 1}
    assert trained_cold.fits["served"]["cold_items"] == cold
    # the evaluation fit gets the same treatment (its metrics describe what is served)
    assert trained_cold.fits["evaluation"]["cold_items"]["content_embedded"] >= 1
    assert load_bundle(cold_bundle).manifest.raw["fits"]["served"]["cold_items"] == cold


def test_a_trained_cold_item_has_the_vector_upsert_items_gives_it(cold_bundle):
    bundle = load_bundle(cold_bundle)
    served = amend(bundle, [CatalogItem("s-later", "crunchy salty snack", "snacks", 10.0,
                                        seq=1, at=1.0)], 1)
    np.testing.assert_allclose(bundle.vectors[bundle.item_row[FRESH]], served.vectors[-1],
                               rtol=1e-6, atol=1e-7)
    assert bundle.items["popularity"][bundle.item_row[FRESH]] == 0


def test_an_item_without_content_keeps_the_zero_vector(cold_bundle):
    bundle = load_bundle(cold_bundle)
    assert not bundle.vectors[bundle.item_row[BARE]].any()
    warm = bundle.items["popularity"] > 0
    assert np.linalg.norm(bundle.vectors[warm], axis=1).min() > 0


def test_without_the_content_map_cold_items_keep_zero_vectors_and_it_says_so(world, caplog):
    config = TrainConfig(als=CONFIG.als, use_ranker=False, drift_users=0, eval_users=0,
                         content=ContentParams(enabled=False))
    with caplog.at_level(logging.WARNING, "tailor.training.pipeline"):
        result = train(*world, config)
    assert result.content is None
    assert result.fits["served"]["cold_items"] == {"items": 2, "content_embedded": 0,
                                                   "content_map": "disabled"}
    assert not result.stage.item_factors[[ITEMS.index(FRESH), ITEMS.index(BARE)]].any()
    assert "content map disabled: 2 catalog items without interactions" in caplog.text
