"""Benchmarks of the serving path: `make bench` writes docs/benchmarks.md."""
