"""Versioned bundle writer and validator (layout and keys: docs/bundle.md).

The bundle is written into a hidden temporary directory next to its destination and renamed
into place, so readers never see a partial bundle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import onnx

from contract import FORMAT, BundleError, Manifest, check_files, read_manifest, sha256_file
from contract.bundle import check_named
from contract.durable import Unconfirmed, confirm, fsync_tree, make_dirs
from kernels.context import CHANNELS, CONTEXT_FEATURES
from kernels.ranking import FEATURES
from training.content import content_manifest, write_content
from training.events import Interactions
from training.split import sorted_order
from training.stage import SEEN_EVENT_TYPES, seen_table

__all__ = ["fingerprint", "write_bundle", "validate_bundle", "find_bundles"]

logger = logging.getLogger("tailor.training.bundle")


def fingerprint(rows: Interactions) -> str:
    """sha256 over the training rows in canonical order (ids, timestamps, events, values)."""
    order = sorted_order(rows)
    h = hashlib.sha256()
    for ids, codes in ((rows.user_ids, rows.user), (rows.item_ids, rows.item)):
        h.update("\x1f".join(ids[codes[order]].tolist()).encode())
    for arr in (rows.ts, rows.event.astype(np.int64), rows.value.astype(np.float32)):
        h.update(np.ascontiguousarray(arr[order]).tobytes())
    return h.hexdigest()


def _items_npz(path: Path, result) -> None:
    cat, stage = result.catalog, result.stage
    np.savez(path, item_ids=cat.item_ids.astype(str), titles=cat.titles.astype(str),
             urls=cat.urls.astype(str), category=cat.category.astype(np.int32),
             category_names=cat.category_names.astype(str), price=cat.price.astype(np.float32),
             popularity=stage.popularity.astype(np.float32),
             recency_days=stage.recency_days.astype(np.float32),
             **({} if cat.images is None else {"images": cat.images.astype(str)}))


def _users_npz(path: Path, result) -> None:
    indptr, items, weights = result.stage.hist
    np.savez(path, user_ids=result.train_rows.user_ids.astype(str),
             indptr=indptr.astype(np.int64), items=items.astype(np.int32),
             weights=weights.astype(np.float32), **seen_table(result.train_rows))


def _manifest(result, version: str, fp: str, files: dict, created: datetime) -> dict:
    cfg, rows, stage = result.config, result.train_rows, result.stage
    context = getattr(result, "context", None)
    ranker = None if result.ranker is None else {
        "file": "ranker.onnx", "input": "features", "output": "score",
        "features": list(FEATURES) + (list(CONTEXT_FEATURES) if context is not None else [])}
    return {
        "format": FORMAT, "version": version,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dim": int(stage.item_factors.shape[1]), "history_len": cfg.als.history_len,
        "history": {"half_life_days": float(cfg.als.half_life_days),
                    "event_weights": {k: float(v) for k, v in cfg.event_weights.items()},
                    "seen_event_types": list(SEEN_EVENT_TYPES)},
        "files": files, "index": result.index_info,
        "encoder": {"file": "encoder.onnx", "inputs": {"items": "int64[B,L]",
                                                       "weights": "float32[B,L]"},
                    "output": "user_vec"},
        "ranker": ranker, "content": content_manifest(result),
        **({} if context is None else {"context": _context_manifest(context, result)}),
        "metrics": result.metrics, "metrics_fit": "evaluation",
        "fits": getattr(result, "fits", {}),
        "data": {"fingerprint": fp, "n_rows": len(rows), "n_users": rows.n_users,
                 "n_items": rows.n_items, "cutoff": int(stage.cutoff)},
        "params": {**cfg.as_dict(), "ranker_info": result.ranker_info,
                   "timings": result.timings},
        **({"drift": result.drift} if getattr(result, "drift", None) else {}),
    }


def _context_manifest(table, result) -> dict:
    """The context entry; ``source``: what the tables and the ranker's context columns were
    fitted from (``events`` or ``impressions``, `training.pipeline`)."""
    source = getattr(result, "context_source", None) or {"source": "events"}
    return {"file": "context.npz", "features": list(CONTEXT_FEATURES), "channels": list(CHANNELS),
            "dayparts": "4 * weekend + utc_hour // 6 (kernels.context.daypart)",
            "n_categories": int(table.channel_lift.shape[1]), **source}


def write_bundle(result, root: str | Path) -> Path:
    """Write ``root/<version>/`` atomically and durably, and return its path: every file and
    the directory on disk before it is renamed into place, the rename (and ``root``, when made
    here) on disk before this returns, so a push or a server right after a power loss reads
    the whole bundle or none (`contract.durable`; before, none of it was fsynced). A ``root``
    that cannot be synced after the rename is a warning, as the server's commands give: the
    bundle is in place and its path is returned (an error there left it unreported, and a
    retry wrote another version beside it)."""
    root = Path(root)
    make_dirs(root, mode=0o777)  # the umask's mode, as before (bootstrap's is private)
    fp = fingerprint(result.train_rows)
    params = json.dumps(result.config.as_dict(), sort_keys=True, default=str)
    digest = hashlib.sha256((fp + params).encode()).hexdigest()[:8]
    while True:   # same data and params within one second: take the next second
        created = datetime.now(UTC)
        version = f"{created.strftime('%Y%m%dT%H%M%S')}-{digest}"
        if not (root / version).exists():
            break
        time.sleep(0.25)
    tmp = root / f".tmp-{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        _items_npz(tmp / "items.npz", result)
        _users_npz(tmp / "users.npz", result)
        faiss.write_index(result.index, str(tmp / "index.faiss"))
        onnx.save(result.stage.encoder, str(tmp / "encoder.onnx"))
        if result.ranker is not None:
            onnx.save(result.ranker, str(tmp / "ranker.onnx"))
        if getattr(result, "content", None) is not None:
            write_content(tmp / "content.npz", result.content[0])
        if getattr(result, "context", None) is not None:
            np.savez(tmp / "context.npz", channel_lift=result.context.channel_lift,
                     daypart_lift=result.context.daypart_lift)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = _manifest(result, version, fp, files, created)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False))
        _servable(tmp)
        fsync_tree(tmp)
        os.rename(tmp, root / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        confirm(root)
    except Unconfirmed as err:
        logger.warning("bundle written: %s, but %s", root / version, err)
    logger.info("bundle written: %s", root / version)
    return root / version


def _servable(tmp: Path) -> None:
    """The manifest just written passes the server's checks (`contract.bundle`), or
    ``BundleError`` (nothing is published)."""
    try:
        read_manifest(tmp)
    except BundleError as err:
        raise BundleError(err.where, f"{err.problem} (the server would refuse this bundle; "
                                     "not written)") from None


def validate_bundle(path: str | Path) -> Manifest:
    """The bundle's checked manifest; ``contract.BundleError`` (a ValueError) if it is invalid.

    The same manifest and file checks the server runs before loading (`contract.bundle`), plus:
    the directory is named by the version.
    """
    manifest = read_manifest(path)
    check_named(path, manifest)
    check_files(path, manifest)
    return manifest


def find_bundles(root: str | Path) -> list[tuple[Path, Manifest | str]]:
    """Every version directory under ``root`` with its manifest, or the reason it is invalid."""
    root = Path(root)
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_dir() and not path.name.startswith("."):
            try:
                out.append((path, validate_bundle(path)))
            except ValueError as err:
                out.append((path, str(err)))
    return out
