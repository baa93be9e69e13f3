"""Offline jobs: demo data, readers, retrieval (ALS + ONNX fold-in encoder), ranker, FAISS index,
evaluation and versioned bundles (docs/bundle.md). Run ``python -m training --help``.

Names are imported lazily so light subcommands (``push``, ``ope``, ...) do not pay for
faiss/lightgbm/onnx imports.
"""
import importlib

__all__ = ["Catalog", "DemoConfig", "Interactions", "TrainConfig", "TrainResult", "load",
           "train", "validate_bundle", "write_bundle", "write_demo"]

_HOME = {"Catalog": "events", "Interactions": "events", "DemoConfig": "demo",
         "write_demo": "demo_files", "TrainConfig": "pipeline", "TrainResult": "pipeline",
         "train": "pipeline", "load": "readers", "validate_bundle": "bundle",
         "write_bundle": "bundle"}


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(f"training.{_HOME[name]}"), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
