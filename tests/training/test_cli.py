import numpy as np
import pyarrow.csv as pacsv

from training.cli import COMMANDS, build_parser
from training.compare_als import main as compare_main


def test_subcommands_are_registered_and_reserved_names_free():
    parser = build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    assert {"demo-data", "train", "bootstrap"} <= names
    assert all(isinstance(c, str) for c in COMMANDS)


def test_compare_als_on_movielens_format(world_dir, tmp_path, capsys):
    rows = pacsv.read_csv(world_dir / "interactions.csv").to_pydict()
    rating = {"view": 1, "click": 3, "add_to_cart": 4, "purchase": 5}
    path = tmp_path / "ratings.dat"
    with open(path, "w") as fh:
        fh.write("userId::movieId::rating::timestamp\n")
        for u, i, t, e in zip(rows["user_id"], rows["item_id"], rows["timestamp"], rows["event"]):
            if e in rating and u % 5 == 0:
                fh.write(f"{u}::{i}::{rating[e]}::{t}\n")
    assert compare_main(["--interactions", str(path), "--format", "movielens",
                         "--factors", "16"]) == 0
    out = capsys.readouterr().out
    table = {ln.split()[0]: [float(x) for x in ln.split()[1:]] for ln in out.splitlines()
             if ln.split() and ln.split()[0] in ("model", "popularity", "implicit-als")}
    assert set(table) == {"model", "popularity", "implicit-als"}
    assert table["model"][1] > table["popularity"][1] and np.isfinite(table["implicit-als"]).all()
