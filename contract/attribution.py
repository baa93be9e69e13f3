"""The bound of one attribution's computation, shared by the server and training.

The server's Attribute and AttributeStored RPCs stop past `Limits.attribution_seconds`
(`TAILOR_LIMITS__ATTRIBUTION_SECONDS`), whose default this is; ``python -m training attribute``
stops past it too (``--seconds`` raises it): Markov at order 3-4 on one long path ran for
minutes and gigabytes with no bound. Their memory is bounded the same way: the ORDERED Shapley
form's credits by rank (`Limits.attribution_rank_cells`; ``--rank-cells``).
"""
from __future__ import annotations

__all__ = ["ATTRIBUTION_SECONDS", "ATTRIBUTION_RANK_CELLS"]

ATTRIBUTION_SECONDS = 5.0
"""Most seconds one attribution may compute, by default (the Markov model and sampled RATE
Shapley check it as they go)."""

ATTRIBUTION_RANK_CELLS = 1_000_000
"""Most cells of the ORDERED Shapley form's credits by rank (channels x the most distinct
channels of one path), by default: two doubles a cell, built in memory (one path of 20,000
distinct channels, a 200 kB file, would take 6.4 GB)."""
