"""Benchmarks: figures, not tests. `make bench` / `make bench-quick`."""
