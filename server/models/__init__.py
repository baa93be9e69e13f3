"""Bundles: loading and validation, staging uploads, and the registry that swaps versions."""
from .bundle import Bundle, BundleInvalid, load_bundle
from .registry import ModelRegistry
from .staging import BundleStaging

__all__ = ["Bundle", "BundleInvalid", "load_bundle", "ModelRegistry", "BundleStaging"]
