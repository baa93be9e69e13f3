"""The content featurizer shared by training and server (kernels.content), on a tiny vocabulary."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.content import ContentSpace, features, price_band, tokenize

DOCS = ["Red kit", "red SET 42", "kit-kit"]
"""Fitted titles: df(kit) = 2, df(red) = 2, df(set) = 1 among n = 3 documents."""
IDF_KIT = IDF_RED = math.log((1 + 3) / (1 + 2)) + 1  # smooth idf: ln((1+n)/(1+df)) + 1
IDF_SET = math.log((1 + 3) / (1 + 1)) + 1


def _space(ridge=None, bias=None) -> ContentSpace:
    vocab = np.array(["kit", "red", "set"])
    n_features = 2 + 3 + 3
    return ContentSpace(vocab, np.array([IDF_KIT, IDF_RED, IDF_SET], np.float32),
                        np.array([10.0, 20.0], np.float32),
                        np.zeros((n_features, 2), np.float32) if ridge is None else ridge,
                        np.zeros(2, np.float32) if bias is None else bias, n_categories=2)


def test_tokenize_keeps_words_of_two_letters_or_more():
    assert tokenize("Red-Kit 42 pro's x") == ["red", "kit", "pro"]


def test_price_band_counts_edges_at_or_below():
    assert price_band(np.array([5.0, 10.0, 15.0, 20.0, 99.0]), np.array([10.0, 20.0])).tolist() == [
        0, 1, 1, 2, 2]


def test_features_by_hand():
    x = features(np.array([1, 0, 0]), np.array([15.0, 5.0, 25.0]),
                 ["kit kit red", "set, red!", "blue 7"], _space())
    # one-hot category | one-hot band | tf-idf (counts x idf, unit L2 norm)
    a, b = IDF_RED, IDF_SET
    first = [0, 1, 0, 1, 0, 2 * a / math.sqrt(5 * a * a), a / math.sqrt(5 * a * a), 0]
    second = [1, 0, 1, 0, 0, 0, a / math.hypot(a, b), b / math.hypot(a, b)]
    third = [1, 0, 0, 0, 1, 0, 0, 0]  # no known token: zeros
    np.testing.assert_allclose(x, [first, second, third], rtol=1e-6)
    assert x[1, 6] == pytest.approx(0.605349, abs=1e-6)  # 1.287682 / 2.127175


def test_tfidf_block_matches_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None).fit(DOCS)
    assert vec.get_feature_names_out().tolist() == ["kit", "red", "set"]
    np.testing.assert_allclose(vec.idf_, [IDF_KIT, IDF_RED, IDF_SET], rtol=1e-12)
    titles = ["kit kit red", "set, red!", "red set kit"]
    ours = features(np.zeros(3, int), np.zeros(3), titles, _space())[:, 5:]
    np.testing.assert_allclose(ours, vec.transform(titles).toarray(), rtol=1e-6)


def test_embed_is_the_ridge_map_of_the_features():
    ridge = np.arange(16, dtype=np.float32).reshape(8, 2)
    space = _space(ridge, np.array([0.5, -0.5], np.float32))
    x = features(np.array([1]), np.array([15.0]), ["kit kit red"], space)
    np.testing.assert_allclose(space.embed(np.array([1]), np.array([15.0]), ["kit kit red"]),
                               x @ ridge + [0.5, -0.5], rtol=1e-6)


def test_check_names_the_mismatched_array():
    space = _space(ridge=np.zeros((7, 2), np.float32))
    with pytest.raises(ValueError, match="ridge"):
        space.check()
