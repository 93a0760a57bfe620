"""The peer systems our benchmarks are compared against (see bench/compare.py)."""
