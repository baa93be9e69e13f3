"""The bundle format: its tag, the typed manifest, file hashing and the checks both sides run.

`training` writes bundles and validates them with these checks; `server` runs the same ones
before it loads any array or model (docs/bundle.md). Every failed check raises `BundleError`
naming the file or manifest key and the problem.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .events import DEFAULT_HALF_LIFE_DAYS, EVENT_TYPES, check_event_weights

__all__ = [
    "FORMAT",
    "MAX_DIM",
    "MAX_HISTORY_LEN",
    "REQUIRED_FILES",
    "BundleError",
    "History",
    "Manifest",
    "check_files",
    "check_named",
    "parse_manifest",
    "read_manifest",
    "sha256_file",
]

FORMAT = "tailor.bundle/1"
MAX_DIM = 65536
MAX_HISTORY_LEN = 10_000
REQUIRED_FILES = ("items.npz", "users.npz", "index.faiss")
_HEX = frozenset("0123456789abcdef")


class BundleError(ValueError):
    """A bundle failed a check: `where` (a file or manifest key) and `problem`."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class History:
    """How the bundle's histories were weighted: one weight per event type, one half-life."""

    event_weights: Mapping[str, float]
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    seen_event_types: tuple[str, ...] | None = None
    """The event type of each bit of users.npz `seen_mask` (bit i: entry i); None when the
    manifest names none (every seen entry then counts as of unknown type)."""


@dataclass(frozen=True)
class Manifest:
    """A checked manifest.json; `raw` keeps every key, known or not, as read."""

    version: str
    dim: int
    history_len: int
    files: Mapping[str, str]
    index: Mapping
    encoder_file: str
    ranker_file: str | None
    ranker_features: tuple[str, ...]
    history: History
    metrics: Mapping
    cutoff: float
    raw: Mapping = field(repr=False)
    content_file: str | None = None
    """The content map's arrays (`content`: items that arrive between trainings), or None."""
    drift: Mapping | None = field(default=None, repr=False)
    """Reference histograms by feature name (`contract.drift.FeatureReference`), or None."""
    context_file: str | None = None
    """The request-context tables (`context`: the ranker's channel/daypart features), or None."""

    @property
    def index_type(self) -> str:
        return str(self.index.get("type", ""))

    @property
    def search_params(self) -> Mapping[str, int]:
        return self.index.get("search_params", {})


def _key(raw: Mapping, key: str, kind, what: str):
    if key not in raw:
        raise BundleError(f"manifest.json: {key}", "missing")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BundleError(f"manifest.json: {key}", f"must be {what}, got {value!r:.80}")
    return value


def _int(raw: Mapping, key: str, hi: int) -> int:
    value = _key(raw, key, int, "an integer")
    if not 1 <= value <= hi:
        raise BundleError(f"manifest.json: {key}", f"must be in [1, {hi}], got {value}")
    return value


def _files(raw: Mapping) -> dict[str, str]:
    files = _key(raw, "files", dict, "an object of file name -> sha256 hex")
    for name, digest in files.items():
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise BundleError(f"manifest.json: files.{name}", "must be a sha256 hex digest")
    return dict(files)


def _file_of(raw: Mapping, key: str, default: str) -> str:
    name = _key(raw, key, dict, "an object").get("file", default)
    if not isinstance(name, str) or not name:
        raise BundleError(f"manifest.json: {key}.file", f"must be a file name, got {name!r:.80}")
    return name


def _index(raw: Mapping) -> dict:
    index = _key(raw, "index", dict, "an object")
    params = index.get("search_params", {})
    if not isinstance(params, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in params.values()):
        raise BundleError("manifest.json: index.search_params", "must map names to ints > 0")
    return index


def _ranker(raw: Mapping) -> tuple[str | None, tuple[str, ...]]:
    if not raw.get("ranker"):
        return None, ()
    features = raw["ranker"].get("features", []) if isinstance(raw["ranker"], dict) else None
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise BundleError("manifest.json: ranker.features", "must be a list of feature names")
    return _file_of(raw, "ranker", "ranker.onnx"), tuple(features)


def _content(raw: Mapping) -> str | None:
    """The optional `content` key: the content map's file (bundles without one stay valid)."""
    if not raw.get("content"):
        return None
    return _file_of(raw, "content", "content.npz")


def _context(raw: Mapping) -> str | None:
    """The optional `context` key: the request-context tables' file (absent: none)."""
    if not raw.get("context"):
        return None
    return _file_of(raw, "context", "context.npz")


def _history(raw: Mapping) -> History:
    """The `history` key; bundles without it were weighted with the defaults."""
    spec = raw.get("history", {})
    if not isinstance(spec, dict):
        raise BundleError("manifest.json: history", "must be an object")
    weights = spec.get("event_weights", {})
    if not isinstance(weights, dict):
        raise BundleError("manifest.json: history.event_weights", "must be an object")
    try:
        table = check_event_weights(weights)
    except ValueError as err:
        raise BundleError("manifest.json: history.event_weights", str(err)) from None
    half_life = spec.get("half_life_days", DEFAULT_HALF_LIFE_DAYS)
    if isinstance(half_life, bool) or not isinstance(half_life, (int, float)) or not (
            0 < half_life < math.inf):
        raise BundleError("manifest.json: history.half_life_days",
                          f"must be a finite number > 0, got {half_life!r:.80}")
    return History(table, float(half_life), _seen_types(spec))


def _seen_types(spec: Mapping) -> tuple[str, ...] | None:
    """`history.seen_event_types`: distinct known event types, one per seen_mask bit. A string
    would match no type (the seen-set would exclude nothing), a number fail every Recommend."""
    types = spec.get("seen_event_types")
    if types is None:
        return None
    where = "manifest.json: history.seen_event_types"
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise BundleError(where, f"must be a list of event type names, got {types!r:.80}")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown or len(set(types)) != len(types):
        raise BundleError(where, f"must name distinct event types (known: {', '.join(EVENT_TYPES)}); "
                                 f"unknown: {unknown!r:.80}")
    return tuple(types)


MAX_UNIX_SECONDS = 32_503_680_000
"""3000-01-01T00:00:00Z in unix seconds: a bundle's later time is one in milliseconds (a data
cutoff in ms never masks a user erased after it: the erased user's history keeps serving)."""


def _cutoff(raw: Mapping) -> float:
    data = raw.get("data", {})
    cutoff = data.get("cutoff", 0.0) if isinstance(data, dict) else None
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not math.isfinite(cutoff):
        raise BundleError("manifest.json: data.cutoff", "must be unix seconds")
    if cutoff >= MAX_UNIX_SECONDS:
        raise BundleError("manifest.json: data.cutoff", f"{cutoff:.0f} is after the year 3000 "
                          "as unix seconds: milliseconds?")
    return float(cutoff)


def _drift(raw: Mapping) -> Mapping | None:
    from .drift import parse_drift  # drift.py raises BundleError: imported once both exist
    return parse_drift(raw)


def parse_manifest(raw) -> Manifest:
    """Check the decoded manifest.json and type it; BundleError names the first bad key."""
    if not isinstance(raw, dict):
        raise BundleError("manifest.json", "not a JSON object")
    fmt = _key(raw, "format", str, "a string")
    if fmt != FORMAT:
        raise BundleError("manifest.json: format", f"{fmt!r:.80}, expected {FORMAT!r}")
    version = _key(raw, "version", str, "a string")
    ranker_file, features = _ranker(raw)
    return Manifest(version=version, dim=_int(raw, "dim", MAX_DIM),
                    history_len=_int(raw, "history_len", MAX_HISTORY_LEN), files=_files(raw),
                    index=_index(raw), encoder_file=_file_of(raw, "encoder", "encoder.onnx"),
                    ranker_file=ranker_file, ranker_features=features, history=_history(raw),
                    metrics=_key(raw, "metrics", dict, "an object"), cutoff=_cutoff(raw),
                    raw=raw, content_file=_content(raw), drift=_drift(raw),
                    context_file=_context(raw))


def read_manifest(path: str | Path) -> Manifest:
    """The checked manifest of the bundle directory `path`."""
    try:
        raw = json.loads((Path(path) / "manifest.json").read_text())
    except FileNotFoundError:
        raise BundleError("manifest.json", "missing") from None
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError("manifest.json", f"unreadable or not valid JSON ({err})") from None
    except RecursionError:
        raise BundleError("manifest.json", "not valid JSON (nested too deep)") from None
    return parse_manifest(raw)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_files(path: str | Path, manifest: Manifest) -> None:
    """Every file the bundle needs is listed, inside `path`, present and of the listed sha256."""
    path = Path(path)
    needed = {*REQUIRED_FILES, manifest.encoder_file}
    if manifest.ranker_file:
        needed.add(manifest.ranker_file)
    if manifest.content_file:
        needed.add(manifest.content_file)
    if manifest.context_file:
        needed.add(manifest.context_file)
    for name in sorted(needed - set(manifest.files)):
        raise BundleError("manifest.json: files", f"does not list {name!r}")
    root = path.resolve()
    for name, expected in manifest.files.items():
        target = (path / name).resolve()
        if root not in target.parents:
            raise BundleError(name, "path escapes the bundle directory")
        if not target.is_file():
            raise BundleError(name, "listed in the manifest but missing")
        actual = sha256_file(target)
        if actual != expected:
            raise BundleError(name, f"sha256 {actual[:12]}… does not match manifest {expected[:12]}…")


def check_named(path: str | Path, manifest: Manifest) -> None:
    """A bundle in a bundles directory is named by its version."""
    if Path(path).name != manifest.version:
        raise BundleError("manifest.json: version",
                          f"{manifest.version!r} is not the directory name {Path(path).name!r}")
