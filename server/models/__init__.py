"""Bundles: loading and validation, staging uploads, the push workflow, and the registry that
swaps versions."""
from .admin import BundleChunk, BundlePusher
from .bundle import Bundle, BundleInvalid, UnknownCategory, load_bundle
from .registry import ModelRegistry
from .staging import BundleStaging

__all__ = ["Bundle", "BundleChunk", "BundleInvalid", "BundlePusher", "BundleStaging",
           "ModelRegistry", "UnknownCategory", "load_bundle"]
