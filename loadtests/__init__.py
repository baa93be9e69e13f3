"""Load tests (Locust gRPC users) and the benchmark command (`python -m loadtests.bench`)."""
