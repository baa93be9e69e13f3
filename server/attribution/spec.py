"""What to compute: the model and its parameters, checked against the paths it will see."""
from __future__ import annotations

from dataclasses import dataclass

from kernels.attribution import DAY, MODELS, Paths

from ..errors import InvalidArgument

__all__ = ["ModelSpec", "MAX_EXACT_CHANNELS", "MAX_SHAPLEY_SAMPLES"]

MAX_EXACT_CHANNELS = 20
"""Largest channel count of the exact RATE Shapley (2**n coalitions)."""
MAX_SHAPLEY_SAMPLES = 100_000
"""Most permutations a sampled RATE Shapley may draw (cost ~ samples x channels x paths)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model (one of `kernels.attribution.MODELS`) with its parameters; 0/empty -> default.

    Attributes
    ----------
    model : str
    order : int
        Markov order 1..4.
    position_shares : (float, float)
        First and last touch shares of the position-based model.
    half_life : float
        Time-decay half-life in seconds.
    direct : str
        Channel skipped by last_non_direct.
    shapley_form : {"counts", "rate", "ordered"}
    samples : int
        Permutations for RATE Shapley past `MAX_EXACT_CHANNELS`; 0 refuses to sample.
    seed : int
    transition_matrix, path_credits : bool
        Also return the Markov transition matrix / per-touch credits.
    """

    model: str
    order: int = 1
    position_shares: tuple[float, float] = (0.4, 0.4)
    half_life: float = 7 * DAY
    direct: str = "direct"
    shapley_form: str = "counts"
    samples: int = 0
    seed: int = 0
    transition_matrix: bool = False
    path_credits: bool = False

    def check(self) -> None:
        """Problems visible without the paths (the kernel checks the value ranges)."""
        if self.model not in MODELS:
            raise InvalidArgument("spec.model", f"unknown model {self.model!r}; expected one of "
                                  f"{', '.join(MODELS)}")
        if self.transition_matrix and self.model != "markov":
            raise InvalidArgument("spec.transition_matrix", "only the MARKOV model has a "
                                  f"transition matrix (model is {self.model})")
        if not 0 <= self.samples <= MAX_SHAPLEY_SAMPLES:
            raise InvalidArgument("spec.shapley_samples", f"must be 0..{MAX_SHAPLEY_SAMPLES}, "
                                  f"got {self.samples}")

    def check_paths(self, paths: Paths, untimed: int | None) -> None:
        """Problems of this model with these paths (`untimed`: first path without timestamps)."""
        if self.model == "time_decay" and paths.n_paths and paths.timestamps is None:
            where = "paths" if untimed is None else f"paths[{untimed}]"
            raise InvalidArgument(f"{where}.timestamps", "the TIME_DECAY model needs one "
                                  "timestamp per touch on every path")
        if (self.model == "shapley" and self.shapley_form == "rate"
                and paths.n_channels > MAX_EXACT_CHANNELS and not self.samples):
            raise InvalidArgument("spec.shapley_samples", f"{paths.n_channels} channels exceed "
                                  f"the exact RATE Shapley limit of {MAX_EXACT_CHANNELS}; set "
                                  "shapley_samples to sample permutations, or use the COUNTS "
                                  "form")

    def kernel_kwargs(self) -> dict:
        return dict(order=self.order, position_shares=self.position_shares,
                    half_life=self.half_life, direct=self.direct,
                    shapley_form=self.shapley_form, max_exact_channels=MAX_EXACT_CHANNELS,
                    samples=self.samples or None, seed=self.seed,
                    transition_matrix=self.transition_matrix, path_credits=self.path_credits)
