"""One thin servicer per proto service: protobuf → domain call → protobuf. No logic here."""
from .registration import register_services

__all__ = ["register_services"]
