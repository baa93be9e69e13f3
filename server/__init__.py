"""Tailor's gRPC server. Entry point: `python -m server`; programmatic: `server.app.TailorServer`."""
