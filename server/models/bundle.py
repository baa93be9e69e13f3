"""Load a bundle directory (docs/bundle.md) and refuse it unless every check holds.

The manifest and file checks are the contract's (`contract.bundle`, shared with training); this
module adds array shapes, FAISS index size and dimension, ONNX input/output names, dtypes and
shapes, and one smoke run of each model.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort

import contract
from contract.items import item_code
from kernels import ranking
from kernels.content import ARRAYS as CONTENT_ARRAYS
from kernels.content import ContentSpace
from kernels.context import ARRAYS as CONTEXT_ARRAYS
from kernels.context import CONTEXT_FEATURES, ContextTable

from ..config import MAX_RANKER_CANDIDATES
from ..errors import FailedPrecondition, InvalidArgument
from ..limits import DEFAULT_LIMITS, Limits
from ..store import tokens
from ..validation import id_problem, link_problem, shown
from .arrays import ArraysTooLarge, load_arrays, text_widths

__all__ = ["Bundle", "BundleInvalid", "HASHED_IDS", "UnknownCategory", "array_files", "bundle_dirs",
           "ids_hashed", "ids_marker", "load_bundle", "read_manifest"]

logger = logging.getLogger("tailor.models.bundle")

ITEM_ARRAYS = ("item_ids", "titles", "urls", "category", "category_names", "price", "popularity",
               "recency_days")
OPTIONAL_ITEM_ARRAYS = ("images",)
"""Item arrays a bundle may lack (written since issue 16; messages show "" without them)."""
USER_ARRAYS = ("user_ids", "indptr", "items", "weights")
SEEN_ARRAYS = ("seen_indptr", "seen_items", "seen_mask", "seen_last_ts")
VOID = b"0" * tokens.TOKEN_CHARS
"""The hash of a scrubbed (erased) user's row (`scrub`): not hex HMAC output any id is expected
to give; rows of many erased users hold it alike."""
HASHED_IDS = "user_ids"
"""Manifest key of a bundle whose users.npz names users by `tokens.user_token` (the server's
copy under the data dir, `server.models.pseudonyms`); training's bundles lack it."""


class BundleInvalid(FailedPrecondition):
    """A bundle failed validation; the message says which check and why."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"bundle rejected: {where}: {problem}")


class UnknownCategory(InvalidArgument):
    """A category name the served bundle does not know, where a request or a catalog item
    names one: the name and the first 20 known ones, each escaped (`shown`: a bundle's names
    come from a catalog file, and the message reaches terminals); the log leaves the name out."""

    def __init__(self, field: str, name: str, known, note: str = ""):
        listed = ", ".join(map(shown, sorted(known)[:20]))
        super().__init__(field, f"unknown category {shown(name)} (the served bundle knows: "
                                f"{listed}){note}", f"unknown category (not the served bundle's){note}")


@dataclass(eq=False)
class Bundle:
    """Everything a version serves with, read-only once loaded."""

    version: str
    path: Path
    manifest: contract.Manifest
    items: dict[str, np.ndarray]
    users: dict[str, np.ndarray]
    index: faiss.Index
    vectors: np.ndarray
    encoder: ort.InferenceSession
    ranker: ort.InferenceSession | None
    loaded_at: float = field(default_factory=time.time)
    content: ContentSpace | None = None
    """The content map (content.npz), None for bundles without one."""
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Sorted rows never to recommend (items removed between trainings, `server.catalog`)."""
    base: Bundle | None = None
    """The bundle as trained, when this one adds catalog updates to it (`server.catalog`)."""
    catalog_seq: int = 0
    """The catalog update sequence number this bundle reflects (0: none applied)."""
    context: ContextTable | None = None
    """The request-context tables (context.npz) when the ranker reads a context feature, else
    None (`server.recommend.context`); a catalog overlay takes its trained bundle's."""

    def __post_init__(self):
        if self.context is None and self.base is not None:
            self.context = self.base.context
        self.ranker_columns = (ranker_columns(self.manifest.ranker_file, self.manifest.ranker_features)
                               if self.ranker is not None else None)
        self.dim = self.manifest.dim
        self.history_len = self.manifest.history_len
        self.n_items = len(self.items["item_ids"])
        self.item_row = {iid: i for i, iid in enumerate(self.items["item_ids"].tolist())}
        self.item_codes = np.fromiter(map(item_code, self.items["item_ids"].astype(str).tolist()),
                                      np.int64, self.n_items)
        """int64 stable code of each item (row order), made here in the loading thread: the
        impression log, seen-set exclusion and live histories map codes and rows with it."""
        # Row of each bundle user by `tokens.user_token` of the id (`row_of`): hashed here
        # when the file holds raw ids (training's output, before `pseudonyms` rewrote it).
        ids = self.users["user_ids"]
        keys = ids.tolist() if ids_hashed(self.manifest) else tokens.user_tokens(ids.astype(str).tolist())
        self.user_row = dict(zip(keys, range(len(ids))))
        self.category_code = {c: i for i, c in enumerate(self.items["category_names"].tolist())}
        self.item_table = ranking.ItemTable.from_arrays(
            self.items["category"], self.items["price"], self.items["popularity"],
            self.items["recency_days"], n_categories=len(self.category_code))
        self.item_category = self.items["category"].astype(np.int32)
        pop = self.items["popularity"].astype(np.float32)
        self.popular = np.argsort(-pop, kind="stable").astype(np.int64)
        self.popularity_score = pop / max(float(pop.max(initial=0.0)), 1.0)
        # Per category: item rows sorted by popularity, for cold start and filtered search.
        order = np.argsort(self.item_category[self.popular], kind="stable")
        by_cat = self.popular[order]
        bounds = np.searchsorted(self.item_category[by_cat], np.arange(len(self.category_code) + 1))
        self.category_items = [by_cat[bounds[c]:bounds[c + 1]] for c in range(len(bounds) - 1)]

    @cached_property
    def ranker_candidates(self) -> int:
        """Candidates a request's ranker re-scores as trained (`trained_candidates`:
        BundleInvalid for a count out of bounds). Read only where the server's
        `ranker_candidates` is unset (`Recommender.candidates`, which checks each bundle it
        loads): a count the server overrides is never used, so never refused."""
        return trained_candidates(self.manifest)

    @property
    def index_type(self) -> str:
        return self.manifest.index_type

    @property
    def trained(self) -> Bundle:
        """The bundle as trained: what its encoder, histories and seen-sets know (rows below
        `trained.n_items`); itself unless catalog updates were added to it."""
        return self if self.base is None else self.base
    def ranker_input(self, feats: np.ndarray) -> np.ndarray:
        """The ranker's ``features`` [N, F'] from the server's feature tensor [..., F]: the
        columns the manifest lists, in its order (`ranker_columns`)."""
        flat = feats.reshape(-1, feats.shape[-1])
        return flat if self.ranker_columns is None else flat[:, self.ranker_columns]

    def row_of(self, user_id: str) -> int | None:
        """The user's row in users.npz (None: unknown or masked): looked up by keyed hash."""
        return self.user_row.get(tokens.user_token(user_id))

    def forget(self, user_id: str) -> None:
        """Never use the user's row again (an erasure after the bundle's data cutoff)."""
        self.user_row.pop(tokens.user_token(user_id), None)

    @property
    def ids_hashed(self) -> bool:
        """True when users.npz holds keyed hashes (the server's copy), not user ids."""
        return ids_hashed(self.manifest)

    def history(self, user_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The training-time history of a known user (items oldest first, weights)."""
        row = self.row_of(user_id)
        if row is None:
            return None
        lo, hi = self.users["indptr"][row], self.users["indptr"][row + 1]
        return self.users["items"][lo:hi], self.users["weights"][lo:hi]


def bundle_dirs(bundles_dir: Path) -> list[Path]:
    """The stored bundles under `bundles_dir`, by version: its directories with a manifest,
    not those being staged or imported (their names start with a dot: `staging`)."""
    return sorted(p for p in bundles_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "manifest.json").exists())


def read_manifest(path: Path) -> contract.Manifest:
    """The bundle's checked manifest (`contract.bundle`); BundleInvalid names the bad key."""
    try:
        return contract.read_manifest(path)
    except contract.BundleError as err:
        raise BundleInvalid(err.where, err.problem) from None


def ids_marker() -> dict:
    """The manifest's `user_ids` value for ids hashed with this server's `store-id` key."""
    return {"hash": "hmac-sha256", "keyring": "store-id", "key_check": tokens.key_check().decode()}


def ids_hashed(manifest: contract.Manifest) -> bool:
    """True when the bundle's users.npz holds keyed hashes, not user ids."""
    return HASHED_IDS in manifest.raw


def _check_id_key(manifest: contract.Manifest) -> None:
    if ids_hashed(manifest) and manifest.raw[HASHED_IDS] != ids_marker():
        raise BundleInvalid("manifest.json: user_ids", "user ids hashed under another key than "
                            "this server's store-id key: push the bundle training wrote")


def _check_user_ids(users: dict, manifest: contract.Manifest) -> None:
    """user_ids names each user once (a user listed twice would be served one of the two
    histories, the later row's, the other never) and, in the server's copy, by keyed hashes:
    there the rows of erased users (`VOID`) are not names; in training's, an id of 32 zeros
    is one like any other."""
    ids, hashed = users["user_ids"], ids_hashed(manifest)
    if hashed and ids.dtype != np.dtype(f"S{tokens.TOKEN_CHARS}"):
        raise BundleInvalid("users.npz", f"user_ids is {ids.dtype}, the manifest says keyed "
                            f"hashes (S{tokens.TOKEN_CHARS})")
    named = ids[ids != VOID] if hashed else ids
    if len(np.unique(named)) != len(named):
        raise BundleInvalid("users.npz", "user_ids lists a name more than once")


def _check_files(path: Path, manifest: contract.Manifest) -> None:
    try:
        contract.check_files(path, manifest)
    except contract.BundleError as err:
        raise BundleInvalid(err.where, err.problem) from None


def _load_arrays(path: Path, name: str, keys: tuple[str, ...],
                 limits: Limits) -> dict[str, np.ndarray]:
    """The arrays of `name`, refused before any is decoded when one is past its bound
    (`arrays.load_arrays`: text widths)."""
    try:
        return load_arrays(path / name, keys, text_widths(limits))
    except KeyError as err:
        raise BundleInvalid(name, f"missing arrays {err.args[0]}") from None
    except ArraysTooLarge as err:
        raise BundleInvalid(name, str(err)) from None
    except (ValueError, OSError) as err:
        raise BundleInvalid(name, f"unreadable ({err})") from None


_INTEGER, _NUMBER, _TEXT = "iu", "iuf", "U"
_ITEM_KINDS = {"category": _INTEGER, "price": _NUMBER, "popularity": _NUMBER,
                 "recency_days": _NUMBER, "item_ids": _TEXT, "titles": _TEXT, "urls": _TEXT,
                 "images": _TEXT, "category_names": _TEXT}
"""The kind of each array (`_check_kinds`): text columns are str (numbers or bytes as ids
would match no id a caller gives: RemoveItems, exclude_item_ids and UpsertItems miss them)."""
_KIND_WORDS = {_INTEGER: "integers", _NUMBER: "numbers", _TEXT: "text (str)"}
_USER_KINDS = {"indptr": _INTEGER, "items": _INTEGER, "weights": _NUMBER,
                 "seen_indptr": _INTEGER, "seen_items": _INTEGER, "seen_mask": "iub",
                 "seen_last_ts": _NUMBER}
_DISTINCT = ("item_ids", "category_names")
"""Arrays naming each entry once (users.npz's user_ids: `_check_user_ids`)."""


def _check_kinds(name: str, arrays: dict, numbers: dict[str, str], known: tuple[str, ...]) -> None:
    """Every array the server reads is one column; numbers are of the kind training writes
    (integer codes and rows, finite values); ids and category names are distinct (`_DISTINCT`)."""
    for key in known:
        if key not in arrays:
            continue
        array = arrays[key]
        if array.ndim != 1:
            raise BundleInvalid(name, f"{key} has shape {array.shape}, expected one column")
        kinds = numbers.get(key)
        if kinds is not None and array.dtype.kind not in kinds:
            raise BundleInvalid(name, f"{key} is {array.dtype}, expected "
                                      f"{_KIND_WORDS.get(kinds, 'integers')}")
        if kinds == _NUMBER and not np.isfinite(array).all():
            raise BundleInvalid(name, f"{key} holds values that are not finite")
        if key in _DISTINCT and len(np.unique(array)) != len(array):
            raise BundleInvalid(name, f"{key} lists a name more than once")


def _check_links(items: dict) -> None:
    """Every item's `urls` and `images` entry is a link a page or an email may put in an href or
    src as is (`validation.link_problem`, the rule UpsertItems applies): a catalog feed's
    ``javascript:`` or ``data:`` link would otherwise be served by Recommend and rendered into
    messages. (UpsertItems also refuses whitespace; a bundle may hold it.) Vectorized: only the
    entries that are neither http(s) URLs nor colon-free paths, or hold a control character,
    are looked at one by one (1M links: ~0.1 s)."""
    for key in ("urls", "images"):
        links = items.get(key)
        if links is None or not len(links):
            continue
        plain = np.char.find(links, ":") < 0
        for prefix in ("http://", "https://", "HTTP://", "HTTPS://"):
            plain |= np.char.startswith(links, prefix)
        suspects = np.flatnonzero(~plain | _control_rows(links))
        bad = [(int(i), problem) for i in suspects
               if (problem := link_problem(str(links[i]))) is not None]
        if bad:
            row, problem = bad[0]
            raise BundleInvalid("items.npz", f"{key}: {len(bad)} links a page or an email cannot "
                                f"carry, e.g. row {row} {shown(str(links[row]))}: {problem} "
                                "(UpsertItems refuses them too)")


def _control_rows(text: np.ndarray, points_per_chunk: int = 1 << 20) -> np.ndarray:
    """Rows of a str array holding a control character or a lone surrogate (numpy's padding,
    NUL, is not one), from its UTF-32 code points, scanned about `points_per_chunk` at a time
    (a fixed count of rows held one long link's width times as much)."""
    out = np.zeros(len(text), bool)
    if text.dtype.itemsize == 0:
        return out
    points = text.view(np.uint32).reshape(len(text), -1)
    chunk = max(1, points_per_chunk // points.shape[1])
    for lo in range(0, len(text), chunk):
        cp = points[lo:lo + chunk]
        out[lo:lo + chunk] = (((cp > 0) & (cp < 0x20)) | (cp == 0x7F)
                              | ((cp >= 0xD800) & (cp <= 0xDFFF))).any(axis=1)
    return out


def _check_arrays(items: dict, users: dict, n_items: int) -> None:
    _check_kinds("items.npz", items, _ITEM_KINDS, (*ITEM_ARRAYS, *OPTIONAL_ITEM_ARRAYS))
    _check_links(items)
    _check_kinds("users.npz", users, _USER_KINDS, (*USER_ARRAYS, *SEEN_ARRAYS))
    for key in (*ITEM_ARRAYS, *OPTIONAL_ITEM_ARRAYS):
        if key != "category_names" and key in items and len(items[key]) != n_items:
            raise BundleInvalid("items.npz", f"{key} has {len(items[key])} rows, expected {n_items}")
    cat = items["category"]
    if n_items and (cat.min() < 0 or cat.max() >= len(items["category_names"])):
        raise BundleInvalid("items.npz", "category codes outside category_names")
    indptr, rows = users["indptr"], users["items"]
    if len(indptr) != len(users["user_ids"]) + 1 or indptr[0] != 0 or indptr[-1] != len(rows):
        raise BundleInvalid("users.npz", "indptr does not match user_ids/items")
    if np.any(np.diff(indptr) < 0) or len(users["weights"]) != len(rows):
        raise BundleInvalid("users.npz", "indptr not monotone or weights length mismatch")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_items):
        raise BundleInvalid("users.npz", "history rows outside the catalog")
    if "seen_indptr" in users:
        _check_seen(users, n_items)


def _check_seen(users: dict, n_items: int) -> None:
    """The optional seen-set arrays (docs/bundle.md): CSR over user_ids, rows ascending."""
    missing = [k for k in SEEN_ARRAYS if k not in users]
    if missing:
        raise BundleInvalid("users.npz", f"seen_indptr without {missing}")
    indptr, rows = users["seen_indptr"], users["seen_items"]
    if len(indptr) != len(users["user_ids"]) + 1 or indptr[0] != 0 or indptr[-1] != len(rows):
        raise BundleInvalid("users.npz", "seen_indptr does not match user_ids/seen_items")
    if np.any(np.diff(indptr) < 0):  # a range ending before it starts fails the whole batch
        raise BundleInvalid("users.npz", "seen_indptr not monotone")
    if len(users["seen_mask"]) != len(rows) or len(users["seen_last_ts"]) != len(rows):
        raise BundleInvalid("users.npz", "seen_mask/seen_last_ts length differs from seen_items")
    if len(rows) and users["seen_last_ts"].max() >= contract.MAX_UNIX_SECONDS:
        raise BundleInvalid("users.npz", "seen_last_ts after the year 3000 as unix seconds: "
                            "milliseconds? (a view would exclude its item for good)")
    if len(rows) and (rows.min() < 0 or rows.max() >= n_items):
        raise BundleInvalid("users.npz", "seen rows outside the catalog")


def _load_content(path: Path, manifest: contract.Manifest, n_categories: int,
                  dim: int, limits: Limits) -> ContentSpace | None:
    """The optional content map (docs/bundle.md), checked against the catalog and dim."""
    name = manifest.content_file
    if name is None:
        return None
    arrays = _load_arrays(path, name, CONTENT_ARRAYS, limits)
    space = ContentSpace(arrays["vocabulary"].astype(str), arrays["idf"], arrays["price_edges"],
                         arrays["ridge"], arrays["bias"], n_categories)
    try:
        space.check()
    except ValueError as err:
        raise BundleInvalid(name, str(err)) from None
    if space.bias.shape != (dim,):
        raise BundleInvalid(name, f"bias has shape {space.bias.shape}, manifest dim {dim}")
    return space


def _load_context(path: Path, manifest: contract.Manifest, n_categories: int,
                  limits: Limits) -> ContextTable | None:
    """The context tables (docs/bundle.md) when the ranker lists a context feature: refused
    without them or when they do not fit the catalog's categories."""
    used = [f for f in manifest.ranker_features if f in CONTEXT_FEATURES]
    if not used:
        return None
    if manifest.context_file is None:
        raise BundleInvalid("manifest.json: context", f"the ranker reads {used} but the "
                            "manifest names no context file")
    arrays = _load_arrays(path, manifest.context_file, CONTEXT_ARRAYS, limits)
    table = ContextTable(*(arrays[k] for k in CONTEXT_ARRAYS))
    try:
        table.check(n_categories)
    except ValueError as err:
        raise BundleInvalid(manifest.context_file, str(err)) from None
    return ContextTable(*(np.ascontiguousarray(a, np.float32) for a in
                          (table.channel_lift, table.daypart_lift)))


_ADDABLE = (faiss.IndexFlat, faiss.IndexHNSW, faiss.IndexIVF)
"""The index classes (and their subclasses) served: those training writes, whose `add` takes
the vectors of items upserted between trainings (an IndexIDMap refuses `add`)."""


def _load_index(path: Path, manifest: contract.Manifest, n_items: int, dim: int) -> faiss.Index:
    try:
        index = faiss.read_index(str(path / "index.faiss"))
    except RuntimeError as err:
        raise BundleInvalid("index.faiss", f"unreadable ({str(err).splitlines()[0]})") from None
    if index.d != dim:
        raise BundleInvalid("index.faiss", f"dimension {index.d}, manifest dim {dim}")
    if index.ntotal != n_items:
        raise BundleInvalid("index.faiss", f"{index.ntotal} vectors for {n_items} items")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise BundleInvalid("index.faiss", "metric is not inner product")
    kind = faiss.downcast_index(index)
    if not isinstance(kind, _ADDABLE):  # the catalog adds new items' vectors (`catalog.overlay`)
        raise BundleInvalid("index.faiss", f"a {type(kind).__name__} index, which cannot take "
                            "new catalog items' vectors: a flat, HNSW or IVF index only")
    params = manifest.search_params
    try:
        if "efSearch" in params:
            faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
        if "nprobe" in params:
            faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    except (AttributeError, RuntimeError, OverflowError, TypeError):  # not that kind of index
        kind = type(faiss.downcast_index(index)).__name__
        raise BundleInvalid("manifest.json: index.search_params",
                            f"{sorted(params)} do not apply to a {kind} index or are out of "
                            "range") from None
    return index


def _session(path: Path, name: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path / name), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises several private exception types
        raise BundleInvalid(name, f"ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None


def _expect_io(sess, name: str, inputs: dict[str, tuple[str, int]], output: str) -> None:
    got = {i.name: i for i in sess.get_inputs()}
    for key, (dtype, rank) in inputs.items():
        if key not in got:
            raise BundleInvalid(name, f"no input {key!r} (has {sorted(got)})")
        if got[key].type != dtype or len(got[key].shape) != rank:
            raise BundleInvalid(name, f"input {key!r} is {got[key].type}{got[key].shape}, "
                                      f"expected {dtype} of rank {rank}")
    if output not in {o.name for o in sess.get_outputs()}:
        raise BundleInvalid(name, f"no output {output!r}")


def _smoke_run(sess, name: str, output: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    """One run of the model on `feed`; a model that cannot take inputs of the shapes the
    manifest gives (a history width or ranker column count it was not built for) is refused."""
    try:
        return sess.run([output], feed)[0]
    except Exception as err:  # onnxruntime raises several private exception types
        shapes = {k: v.shape for k, v in feed.items()}
        raise BundleInvalid(name, f"smoke run on inputs of shapes {shapes} (from the manifest) "
                                  f"failed ({str(err).splitlines()[0]})") from None


def _check_encoder(sess, name: str, dim: int, hist_len: int, n_items: int) -> None:
    """Signature, then one run on a history of the first item, an empty one, and one of the
    last item (an encoder built for a smaller catalog fails there, not on every later user)."""
    _expect_io(sess, name, {"items": ("tensor(int64)", 2), "weights": ("tensor(float)", 2)},
               "user_vec")
    items = np.zeros((3, hist_len), np.int64)
    items[2, 0] = max(n_items - 1, 0)
    weights = np.zeros((3, hist_len), np.float32)
    weights[0, 0] = weights[2, 0] = 1.0
    out = _smoke_run(sess, name, "user_vec", {"items": items, "weights": weights})
    if out.shape != (3, dim) or not np.all(np.isfinite(out)):
        raise BundleInvalid(name, f"smoke run gave shape {out.shape} (want (3, {dim})) or non-finite values")
    _check_every_item(sess, name, hist_len, n_items)


def _check_every_item(sess, name: str, hist_len: int, n_items: int, per_run: int = 16384) -> None:
    """Fold every item in (`hist_len` items of weight 1 a history, about `per_run` items a run): an
    item whose encoder factors are not finite gives every user who touched it a NaN vector
    (an arbitrary answer, the same for all of them) while the runs above pass. The first such
    item is named. O(n_items * dim^2) work: 0.6 s for 1M items of dim 64, one thread."""
    width = max(1, per_run // hist_len) * hist_len
    for lo in range(0, n_items, width):
        items = np.arange(lo, min(lo + width, n_items), dtype=np.int64)
        batch = np.resize(items, -(-len(items) // hist_len) * hist_len).reshape(-1, hist_len)
        ok = np.isfinite(_smoke_run(sess, name, "user_vec", {
            "items": batch, "weights": np.ones(batch.shape, np.float32)})).all(axis=1)
        if not ok.all():
            _refuse_history(sess, name, hist_len, batch[np.flatnonzero(~ok)[0]])


def _refuse_history(sess, name: str, hist_len: int, history: np.ndarray) -> None:
    """Refuse the bundle for a `history` of items that folds in to a non-finite vector, naming
    the first item that does alone, else the history (its items finite alone: factors so
    large that together they overflow)."""
    alone = _smoke_run(sess, name, "user_vec", {
        "items": history[:, None].repeat(hist_len, 1),
        "weights": np.eye(len(history), hist_len, dtype=np.float32)})
    bad = np.flatnonzero(~np.isfinite(alone).all(axis=1))
    what = (f"item row {int(history[bad[0]])}" if bad.size else
            f"item rows {int(history.min())} to {int(history.max())} together (each finite "
            "alone: factors too large?)")
    raise BundleInvalid(name, f"{what} folds in to a user vector that is not finite (NaN or inf "
                        "in the factors?): every user who touched it would get an arbitrary "
                        "answer")


def ranker_columns(name: str, features: tuple[str, ...]) -> np.ndarray | None:
    """Columns of `kernels.ranking.FEATURES` (then `kernels.context.CONTEXT_FEATURES`, which the
    server appends only for a bundle that lists one) the ranker reads, in its order (None: all
    of `FEATURES`, in that order). A bundle trained before a feature was added lists fewer: the
    server computes every feature it knows and hands the ranker the ones its manifest lists."""
    known = {f: i for i, f in enumerate(ranking.FEATURES + CONTEXT_FEATURES)}
    unknown = [f for f in features if f not in known]
    if unknown or not features or len(set(features)) != len(features):
        raise BundleInvalid(name, f"features {list(features)} must be distinct names this server "
                                  f"computes ({list(ranking.FEATURES + CONTEXT_FEATURES)}); "
                                  f"unknown: {unknown}")
    if tuple(features) == tuple(ranking.FEATURES):
        return None
    return np.asarray([known[f] for f in features], np.int64)


DEFAULT_CANDIDATES = 100
"""The ranker's candidates per request for a bundle whose manifest names no trained count."""


def trained_candidates(manifest: contract.Manifest) -> int:
    """`params.ranker.n_candidates` of the manifest (training's `--candidates`), checked: an
    integer in [1, `MAX_RANKER_CANDIDATES`]; `DEFAULT_CANDIDATES` when it names none."""
    params = manifest.raw.get("params")
    ranker = params.get("ranker") if isinstance(params, dict) else None
    value = ranker.get("n_candidates") if isinstance(ranker, dict) else None
    if value is None:
        return DEFAULT_CANDIDATES
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= MAX_RANKER_CANDIDATES:
        raise BundleInvalid("manifest.json: params.ranker.n_candidates", f"must be an integer in "
                            f"[1, {MAX_RANKER_CANDIDATES}], got {value!r:.80}")
    return value


def _check_ranker(sess, name: str, features: tuple[str, ...]) -> None:
    ranker_columns(name, features)
    _expect_io(sess, name, {"features": ("tensor(float)", 2)}, "score")
    out = _smoke_run(sess, name, "score", {"features": np.zeros((3, len(features)), np.float32)})
    if out.reshape(-1).shape != (3,):
        raise BundleInvalid(name, f"smoke run gave shape {out.shape}, want (3,) or (3, 1)")


def _check_item_ids(ids: np.ndarray, id_bytes: int) -> None:
    """Every item id is one the API takes (`validation.id_problem`: RemoveItems, TrackEvents,
    exclude_item_ids): an item it cannot name would serve, but could never be removed, and no
    click or purchase of it would be taken (a bought item would keep coming back)."""
    lengths = np.char.str_len(ids) if len(ids) else np.zeros(1, np.int64)
    if lengths.min() > 0 and lengths.max() <= id_bytes >> 2 and \
            id_problem("".join(ids.tolist()) or "-", 1 << 62) is None:
        return  # short enough whatever their UTF-8, and not one control character among them
    for item_id in ids.tolist():
        problem = id_problem(item_id, id_bytes)
        if problem is not None:
            bad = int(sum(id_problem(i, id_bytes) is not None for i in ids.tolist()))
            raise BundleInvalid("items.npz", f"item_ids: {bad} ids the API cannot name, e.g. "
                                f"{shown(item_id)} {problem} (at most {id_bytes} bytes: "
                                "TAILOR_LIMITS__ID_BYTES)")


def array_files(manifest: contract.Manifest) -> tuple[str, ...]:
    """The files `load_bundle` reads as .npz archives: items.npz, users.npz, and the content
    map's and context tables' whatever the manifest names them (numpy opens a file as an .npz
    by its first bytes, not its name)."""
    return ("items.npz", "users.npz",
            *(name for name in (manifest.content_file, manifest.context_file) if name))


def load_bundle(path: Path | str, threads: int = 1, verify_checksums: bool = True,
                limits: Limits | None = None) -> Bundle:
    """Load and fully validate the bundle at `path`; raise BundleInvalid naming the failed check.
    `limits`: the server's (item ids the API takes, text widths); None: the
    defaults, item ids not checked one by one."""
    path = Path(path)
    started = time.perf_counter()
    manifest = read_manifest(path)
    if verify_checksums:
        _check_files(path, manifest)
    dim, hist_len = manifest.dim, manifest.history_len
    bounds = limits or DEFAULT_LIMITS
    items = _load_arrays(path, "items.npz", ITEM_ARRAYS, bounds)
    users = _load_arrays(path, "users.npz", USER_ARRAYS, bounds)
    n_items = len(items["item_ids"])
    _check_arrays(items, users, n_items)
    if limits is not None:
        _check_item_ids(items["item_ids"], limits.id_bytes)
    _check_id_key(manifest)
    _check_user_ids(users, manifest)
    index = _load_index(path, manifest, n_items, dim)
    vectors = index.reconstruct_n(0, n_items) if n_items else np.zeros((0, dim), np.float32)
    if not np.isfinite(vectors).all():  # such an item is never recommended, silently
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        raise BundleInvalid("index.faiss", f"{len(bad)} item vectors are not finite (first: "
                            f"row {int(bad[0])})")
    encoder = _session(path, manifest.encoder_file, threads)
    _check_encoder(encoder, manifest.encoder_file, dim, hist_len, n_items)
    ranker = None
    if manifest.ranker_file:
        ranker = _session(path, manifest.ranker_file, threads)
        _check_ranker(ranker, manifest.ranker_file, manifest.ranker_features)
    content = _load_content(path, manifest, len(items["category_names"]), dim, bounds)
    context = _load_context(path, manifest, len(items["category_names"]), bounds)
    bundle = Bundle(version=manifest.version, path=path, manifest=manifest, items=items,
                    users=users, index=index, vectors=np.ascontiguousarray(vectors, np.float32),
                    encoder=encoder, ranker=ranker, content=content, context=context)
    logger.info("loaded bundle %s (%d items, %s index) in %.2fs", bundle.version, n_items,
                bundle.index_type, time.perf_counter() - started)
    return bundle
