"""Offline jobs: demo data, readers, retrieval (ALS + ONNX fold-in encoder), ranker, FAISS index,
evaluation and versioned bundles (docs/bundle.md). Run ``python -m training --help``."""
from training.bundle import validate_bundle, write_bundle
from training.demo import DemoConfig, write_demo
from training.events import Catalog, Interactions
from training.pipeline import TrainConfig, TrainResult, train
from training.readers import load

__all__ = ["Catalog", "DemoConfig", "Interactions", "TrainConfig", "TrainResult", "load",
           "train", "validate_bundle", "write_bundle", "write_demo"]
