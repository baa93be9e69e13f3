"""Give a trained bundle the seen-set arrays of docs/bundle.md (users.npz `seen_*`), computed
from the interactions it was trained on, so server tests do not depend on the training job
writing them. Every row counts, held-out ones too (the seen-set is complete by contract)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv


def add_seen_arrays(bundle: Path, interactions: Path, out: Path) -> Path:
    """Copy `bundle` to `out` with seen arrays built from `interactions` (demo CSV columns)."""
    shutil.copytree(bundle, out)
    table = pacsv.read_csv(interactions, convert_options=pacsv.ConvertOptions(
        column_types={"user_id": "string", "item_id": "string"})).to_pydict()
    with np.load(out / "users.npz", allow_pickle=False) as npz:
        users = {k: npz[k] for k in npz.files}
    with np.load(out / "items.npz", allow_pickle=False) as npz:
        item_row = {str(i): r for r, i in enumerate(npz["item_ids"].tolist())}
    user_row = {str(u): r for r, u in enumerate(users["user_ids"].tolist())}
    types = sorted(set(table["event"]))
    bit = {t: 1 << i for i, t in enumerate(types)}
    seen: dict[tuple[int, int], list[int]] = {}
    for u, i, ts, ev in zip(table["user_id"], table["item_id"], table["timestamp"], table["event"]):
        if u in user_row and i in item_row:
            entry = seen.setdefault((user_row[u], item_row[i]), [0, 0])
            entry[0] |= bit[ev]
            entry[1] = max(entry[1], int(ts))
    keys = sorted(seen)
    counts = np.bincount([u for u, _ in keys], minlength=len(user_row))
    users["seen_indptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    users["seen_items"] = np.array([i for _, i in keys], np.int32)
    users["seen_mask"] = np.array([seen[k][0] for k in keys], np.uint32)
    users["seen_last_ts"] = np.array([seen[k][1] for k in keys], np.int64)
    np.savez(out / "users.npz", **users)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["history"]["seen_event_types"] = types
    manifest["files"]["users.npz"] = hashlib.sha256((out / "users.npz").read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
