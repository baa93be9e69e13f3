"""Context features of a decision: numeric request context plus selected profile features.

Names (in the campaign's order):

    request.<key>                          the request's context[key] (0 when absent)
    profile.recency_days                   log1p(days since the last event)
    profile.frequency / profile.monetary   log1p(all-time purchases / purchase value)
    profile.n_events                       log1p(all-time events)
    profile.open_rate.<channel>            smoothed all-time open rate of the channel
    profile.click_rate.<channel>           smoothed all-time click rate
    profile.count.<type>/<channel>/<d>d    log1p(count decayed with a half-life of d days)

Users without a profile get 0 for every profile feature. Profile states are read through the
`ProfileStates` interface (`server.interfaces`) and decoded with `kernels.features`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from kernels import feature_layout as fl
from kernels import features as kf

from ..errors import InvalidArgument
from ..limits import DEFAULT_LIMITS
from ..profiles.schema import CHANNELS, EVENT_TYPES, ProfileSchema
from ..validation import check_count

__all__ = ["ContextBuilder", "check_feature_names", "UNREAD"]

_NO_FEATURES: list[float] = []
"""The context of every user of a campaign without features (one list, never changed)."""
UNREAD = object()
"""`ContextBuilder.build`'s state when the caller did not read it (the builder then does)."""

_SCALARS = {
    "recency_days": lambda f: math.log1p(f["recency_s"] / 86400.0) if f["n_events"] else 0.0,
    "frequency": lambda f: math.log1p(f["frequency_all"]),
    "monetary": lambda f: math.log1p(max(f["monetary_all"], 0.0)),
    "n_events": lambda f: math.log1p(f["n_events"]),
}
_HALF_LIVES = tuple(f"{d:g}d" for d in ProfileSchema().half_lives_days)


def _profile_reader(name: str) -> Callable[[dict], float] | None:
    """A function of `read_features` output for a `profile.` feature name, or None."""
    if name in _SCALARS:
        return _SCALARS[name]
    kind, _, rest = name.partition(".")
    if kind in ("open_rate", "click_rate") and rest in CHANNELS:
        c = CHANNELS.index(rest)
        return lambda f: float(f[f"{kind}_all"][c])
    parts = rest.split("/")
    if kind == "count" and len(parts) == 3 and parts[0] in EVENT_TYPES and parts[1] in CHANNELS \
            and parts[2] in _HALF_LIVES:
        h, t, c = _HALF_LIVES.index(parts[2]), EVENT_TYPES.index(parts[0]), CHANNELS.index(parts[1])
        return lambda f: math.log1p(float(f["counts_decayed"][h, t, c]))
    return None


def pii_positions(names: Sequence[str], is_pii: Callable[[str], bool]) -> list[int]:
    """Positions of a decision's logged context (the campaign's context feature `names`) that
    hold request values under PII keys (`request.<key>`, `is_pii(key)`): what a caller without
    `pii-reader` does not read (ExportDecisions, an access export's decisions)."""
    return [i for i, n in enumerate(names) if n.startswith("request.") and is_pii(n[8:])]


def check_feature_names(names: Sequence[str], most: int) -> None:
    check_count("context_features", len(names), most)
    if len(set(names)) != len(names):
        raise InvalidArgument("context_features", "names must be distinct")
    for i, name in enumerate(names):
        source, _, rest = name.partition(".")
        if source == "request" and rest:
            continue
        if source == "profile" and _profile_reader(rest) is not None:
            continue
        raise InvalidArgument(f"context_features[{i}]", f"{name!r} is neither request.<key> nor a "
                              "known profile feature (see the CampaignSpec docs)")


class ContextBuilder:
    """Turns (user, request context) into the feature vector a campaign asks for."""

    def __init__(self, names: Sequence[str], profile_states, layout: fl.FeatureLayout,
                 value_max: float = DEFAULT_LIMITS.context_value_max):
        """`value_max`: the largest magnitude of a request value (`Limits.context_value_max`)."""
        self.names = tuple(names)
        self.value_max = value_max
        self._states = profile_states
        self._layout = layout
        self._readers = []
        for name in self.names:
            source, _, rest = name.partition(".")
            self._readers.append((source, rest if source == "request" else _profile_reader(rest)))
        self.needs_profile = any(s == "profile" for s, _ in self._readers)

    def build(self, user_id: str, request: Mapping[str, float], state=UNREAD) -> list[float]:
        """The feature vector; `state` is the user's feature state if the caller read it."""
        if self.needs_profile and state is UNREAD:
            state = self._states([user_id])[0]
        return self.from_state(None if state is UNREAD else state, request, time.time())

    def build_batch(self, states: Sequence[np.ndarray | None], request: Mapping[str, float],
                    now: float) -> list[list[float]]:
        """`build` for a batch whose states the caller read (one snapshot, `ProfileStates`)."""
        if not self.names:
            return [_NO_FEATURES] * len(states)
        return [self.from_state(state, request, now) for state in states]

    def from_state(self, state: np.ndarray | None, request: Mapping[str, float],
                   now: float) -> list[float]:
        """The features of one user from their profile state (None: no profile) at `now`."""
        feats = None
        if state is not None and self.needs_profile:
            feats = kf.read_features(self._layout, state, now, recent=False)
        out = []
        for source, reader in self._readers:
            if source == "request":
                value = float(request.get(reader, 0.0))
                if not -self.value_max <= value <= self.value_max:  # NaN too
                    raise InvalidArgument(f"context[{reader!r}]", f"must be a finite number within "
                                          f"±{self.value_max:g}, got {value:g}")
            else:
                value = reader(feats) if feats is not None else 0.0
            out.append(value)
        return out

    @staticmethod
    def policy_x(context: Sequence[float], dim: int) -> np.ndarray | None:
        """The linear policies' input: a bias then the context (None for the others)."""
        if not dim:
            return None
        return np.array([1.0, *context], dtype=np.float64)
