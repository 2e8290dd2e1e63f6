"""Benchmarks (not tests): the real bot against the protocol fakes; see BENCHMARKS.md."""
