"""The Recommend path: validated queries → micro-batches → encoder, FAISS, filters, ranker."""
from .batcher import AdaptiveBatcher
from .handler import Recommender
from .pipeline import RecQuery, RecResult, recommend_batch

__all__ = ["AdaptiveBatcher", "Recommender", "RecQuery", "RecResult", "recommend_batch"]
