"""Typed result of `attribute` and `attribute_stored`: credit per channel (or campaign), and
what the model's options asked for (path credits, the Markov transition matrix, stored paths)."""
from __future__ import annotations

from dataclasses import dataclass

from protos.tailor.v1 import attribution_pb2 as attr_pb

from .results import from_message

__all__ = ["ChannelCredit", "PathCredit", "TransitionMatrix", "StoredPath", "Attribution"]


@dataclass(frozen=True)
class ChannelCredit:
    channel: str
    conversions: float
    value: float
    removal_effect: float
    value_removal_effect: float
    stderr: float
    rank_conversions: list[float]
    rank_value: list[float]
    value_stderr: float


@dataclass(frozen=True)
class PathCredit:
    path_index: int
    touch_conversions: list[float]
    touch_value: list[float]


@dataclass(frozen=True)
class TransitionMatrix:
    """Sparse: probability[i] of moving from states[row[i]] to states[col[i]]."""

    states: list[str]
    row: list[int]
    col: list[int]
    probability: list[float]


@dataclass(frozen=True)
class StoredPath:
    """A journey the server built from stored events."""

    channels: list[str]
    path: str
    timestamps: list[float]
    conversions: float
    value: float
    nulls: float


@dataclass(frozen=True)
class Attribution:
    model: str
    """The AttributionModel's name (LINEAR, MARKOV, ...)."""
    credits: list[ChannelCredit]
    paths: int
    total_conversions: float
    total_value: float
    path_credits: list[PathCredit]
    transition_matrix: TransitionMatrix | None
    conversion_probability: float
    unattributed_conversions: float
    unattributed_value: float
    stored_paths: list[StoredPath]
    shapley_samples: int

    @classmethod
    def from_pb(cls, msg: attr_pb.AttributeResponse) -> Attribution:
        return from_message(cls, msg)
