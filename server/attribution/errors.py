"""Attribution errors: the kernel's ValueErrors, renamed after the request field they concern."""
from __future__ import annotations

from ..errors import InvalidArgument

__all__ = ["KERNEL_FIELDS", "from_kernel"]

# `kernels.attribution` names its arguments at the start of each message ("order: must be...").
KERNEL_FIELDS = {
    "model": "spec.model",
    "order": "spec.order",
    "position_shares": "spec.position_first/position_last",
    "half_life": "spec.half_life_seconds",
    "shapley_form": "spec.shapley_form",
    "samples": "spec.shapley_samples",
    "max_exact_channels": "spec.shapley_samples",
    "paths": "paths",
    "conversions": "paths.conversions",
    "value": "paths.value",
    "nulls": "paths.nulls",
    "timestamps": "paths.timestamps",
}


def from_kernel(err: ValueError) -> InvalidArgument:
    """`InvalidArgument` naming the request field behind a kernel `ValueError`."""
    name, sep, problem = str(err).partition(": ")
    if sep and name in KERNEL_FIELDS:
        return InvalidArgument(KERNEL_FIELDS[name], problem)
    return InvalidArgument("paths", str(err))
