"""Benchmarks: the kit side by side with what a user would otherwise run (`python -m bench.NAME`)."""
