"""`server.models.scrub` on arrays written by hand: which entries go, which stay."""
import numpy as np
import pytest

from server.models.scrub import QUEUE, VOID, ScrubQueue, _take_queue, scrub_users
from server.store import tokens


def _users():
    return {"user_ids": np.array([b"a" * 32, b"b" * 32, b"c" * 32]),
            "indptr": np.array([0, 2, 5, 6]), "items": np.array([10, 11, 20, 21, 22, 30]),
            "weights": np.array([1., 2., 3., 4., 5., 6.], np.float32),
            "seen_indptr": np.array([0, 1, 1, 3]), "seen_items": np.array([10, 30, 31]),
            "seen_mask": np.array([1, 2, 3], np.uint8), "seen_last_ts": np.array([7., 8., 9.]),
            "factors": np.array([[1., 1.], [2., 2.], [3., 3.]])}


def test_scrub_empties_the_erased_rows_and_keeps_the_others():
    out = scrub_users(_users(), {b"b" * 32, b"z" * 32})
    assert out["user_ids"].tolist() == [b"a" * 32, VOID, b"c" * 32]
    assert out["indptr"].tolist() == [0, 2, 2, 3]
    assert out["items"].tolist() == [10, 11, 30] and out["weights"].tolist() == [1., 2., 6.]
    assert out["seen_indptr"].tolist() == [0, 1, 1, 3]  # b had no seen entries
    assert out["seen_items"].tolist() == [10, 30, 31]
    assert out["factors"].tolist() == [[1., 1.], [0., 0.], [3., 3.]]
    last = scrub_users(_users(), {b"c" * 32})
    assert last["seen_indptr"].tolist() == [0, 1, 1, 1] and last["seen_items"].tolist() == [10]
    assert last["seen_mask"].tolist() == [1] and last["seen_last_ts"].tolist() == [7.]


def test_scrub_of_users_a_bundle_lacks_is_none():
    assert scrub_users(_users(), {b"z" * 32}) is None


def test_queue_is_taken_with_what_an_interrupted_scrub_left(tmp_path):
    queue = ScrubQueue(tmp_path, clock=lambda: 9.5)
    queue.erase_user(None, "u1")
    (tmp_path / ".erased.taking").write_bytes(tokens.user_token("u0") + b" 5.0\n")
    queue.erase_user(None, "u0")  # erased again, later: the latest time counts
    assert _take_queue(tmp_path) == {tokens.user_token("u0"): 9.5, tokens.user_token("u1"): 9.5}
    assert not (tmp_path / QUEUE).exists()
    queue.erase_user(None, "u2")  # after the take: a new queue file
    assert (tmp_path / QUEUE).read_bytes() == tokens.user_token("u2") + b" 9.5\n"


def test_a_stored_bundle_with_several_erased_users_still_loads(tmp_path, demo_bundle):
    """Every erased user's row holds `VOID`: the load's check that users.npz names each user
    once (a user listed twice is refused) counts none of them."""
    import shutil

    from server.models.bundle import BundleInvalid, load_bundle
    from server.models.pseudonyms import hash_stored
    from server.models.scrub import scrub_stored

    stored = tmp_path / "bundles" / demo_bundle.name
    shutil.copytree(demo_bundle, stored)
    hash_stored(stored.parent)
    queue = ScrubQueue(stored.parent, clock=lambda: 4e9)  # erased after the cutoff
    for user in ("0", "1", "2"):
        queue.erase_user(None, user)
    assert scrub_stored(stored.parent) > 0
    bundle = load_bundle(stored)
    assert (bundle.users["user_ids"] == VOID).sum() == 3
    assert bundle.row_of("0") is None and bundle.row_of("3") is not None
    arrays = dict(bundle.users)  # a repeated hash that is not VOID: refused
    arrays["user_ids"][4] = arrays["user_ids"][3]
    np.savez(stored / "users.npz", **arrays)
    with pytest.raises(BundleInvalid, match="users.npz: user_ids lists a name more than once"):
        load_bundle(stored, verify_checksums=False)
