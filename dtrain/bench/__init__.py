"""Throughput benchmarks behind `dtrain bench`: loader-only, model-only, end-to-end, and the
engine's training step against a bare torch loop. See benchmarks/RESULTS.md for figures."""
