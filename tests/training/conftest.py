import numpy as np
import pytest

from training.als import ALSParams
from training.demo import DemoConfig
from training.demo_files import write_demo
from training.events import EVENTS, Interactions
from training.pipeline import TrainConfig, train
from training.ranker import RankerParams
from training.readers import load

SMALL = DemoConfig(n_users=2500, n_items=600, n_days=30, seed=7)


def make_interactions(rows, item_ids=None):
    """rows: (user_id, item_id, ts[, event[, value]]) tuples -> Interactions."""
    users = sorted({r[0] for r in rows})
    items = item_ids or sorted({r[1] for r in rows})
    return Interactions(
        np.array(users), np.array(items),
        np.array([users.index(r[0]) for r in rows], np.int32),
        np.array([items.index(r[1]) for r in rows], np.int32),
        np.array([r[2] for r in rows], np.int64),
        np.array([EVENTS.index(r[3] if len(r) > 3 else "view") for r in rows], np.int8),
        np.array([r[4] if len(r) > 4 else 0.0 for r in rows], np.float32))


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    write_demo(out, SMALL)
    return out


@pytest.fixture(scope="session")
def small_world(world_dir):
    return load(world_dir / "interactions.csv", world_dir / "items.csv")


@pytest.fixture(scope="session")
def small_config():
    return TrainConfig(als=ALSParams(factors=32, iterations=10),
                       ranker=RankerParams(n_candidates=50, max_users=2000))


@pytest.fixture(scope="session")
def trained(small_world, small_config):
    return train(*small_world, small_config)
