"""The bound of one attribution's computation, shared by the server and training.

The server's Attribute and AttributeStored RPCs stop past `Limits.attribution_seconds`
(`TAILOR_LIMITS__ATTRIBUTION_SECONDS`), whose default this is; ``python -m training attribute``
stops past it too (``--seconds`` raises it): Markov at order 3-4 on one long path ran for
minutes and gigabytes with no bound.
"""
from __future__ import annotations

__all__ = ["ATTRIBUTION_SECONDS"]

ATTRIBUTION_SECONDS = 5.0
"""Most seconds one attribution may compute, by default (the Markov model and sampled RATE
Shapley check it as they go)."""
