"""Throughput and accuracy benchmarks: ``python -m benchmarks [--quick] [--json] [--only ROW]``."""
