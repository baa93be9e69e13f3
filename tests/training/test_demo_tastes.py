import numpy as np

from kernels.context import ContextTable, daypart
from training.demo import DemoConfig, make_world, user_events
from training.demo_tastes import ContextTastes

CFG = DemoConfig(n_users=3000, n_items=300, n_days=21, seed=5, chunk_users=3000)


def test_off_is_the_default_world_and_on_is_deterministic():
    world = make_world(CFG)
    base = user_events(CFG, world, 0)[1]
    off = user_events(CFG, world, 0, 0.0)[1]
    assert "channel" not in base and all(np.array_equal(base[k], off[k]) for k in base)
    a, b = user_events(CFG, world, 0, 1.0)[1], user_events(CFG, world, 0, 1.0)[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["item_id"], base["item_id"])
    # email rows carry the email channel; shop rows web or app
    email = np.isin(a["event"], (4, 5, 6))
    assert (a["channel"][email] == 2).all() and set(np.unique(a["channel"][~email])) == {0, 1}


def test_context_tilts_categories_the_way_the_world_says():
    world = make_world(CFG)
    ev = user_events(CFG, world, 0, 1.5)[1]
    shop = ev["event"] == 0
    cat = world.category[ev["item_id"][shop]]
    fitted = ContextTable.fit(cat, ev["channel"][shop], ev["timestamp"][shop], 16)
    truth = ContextTastes(CFG.seed, 16, 1.5)
    # lifts are relative (a tilt moves a view between the user's own categories), so the fitted
    # ones follow the true tilts up to an offset: compare by correlation
    gap_true = truth.channel[1] - truth.channel[0]
    gap_fit = fitted.channel_lift[1] - fitted.channel_lift[0]
    assert np.corrcoef(gap_true, gap_fit)[0, 1] > 0.8
    part_true = truth.part - truth.part.mean(axis=0)
    assert np.corrcoef(part_true.ravel(), fitted.daypart_lift.ravel())[0, 1] > 0.5
    assert daypart(ev["timestamp"]).max() < 8


def test_write_demo_adds_a_channel_column_only_when_on(tmp_path):
    import pyarrow.csv as pacsv

    from training.demo_files import write_demo
    from training.readers import load

    tiny = DemoConfig(n_users=200, n_items=100, n_days=14, seed=3, chunk_users=200)
    write_demo(tmp_path / "off", tiny)
    write_demo(tmp_path / "on", tiny, context_tastes=1.0)
    off = pacsv.read_csv(tmp_path / "off" / "interactions.csv")
    on = pacsv.read_csv(tmp_path / "on" / "interactions.csv")
    assert "channel" not in off.column_names
    assert set(on.column("channel").to_pylist()) == {"web", "app", "email"}
    inter, _ = load(tmp_path / "on" / "interactions.csv", tmp_path / "on" / "items.csv")
    assert len(inter) == on.num_rows   # the trainer reads the file (and ignores the column)
