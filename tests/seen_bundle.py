"""A copy of a trained bundle as older trainers wrote it: users.npz without the seen-set arrays
of docs/bundle.md (`seen_*`), for the server's fallback to the training history."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np


def without_seen_arrays(bundle: Path, out: Path) -> Path:
    """Copy `bundle` to `out` with the `seen_*` arrays and `history.seen_event_types` removed."""
    shutil.copytree(bundle, out)
    with np.load(out / "users.npz", allow_pickle=False) as npz:
        users = {k: npz[k] for k in npz.files if not k.startswith("seen_")}
    np.savez(out / "users.npz", **users)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["history"].pop("seen_event_types", None)
    manifest["files"]["users.npz"] = hashlib.sha256((out / "users.npz").read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
