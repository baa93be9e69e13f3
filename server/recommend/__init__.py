"""The Recommend path: validated queries → micro-batches → encoder, FAISS, filters, ranker."""
from .handler import Recommender
from .pipeline import RecQuery, RecResult, recommend_batch

__all__ = ["Recommender", "RecQuery", "RecResult", "recommend_batch"]
