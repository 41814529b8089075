"""The benchmark itself: its cases (test_cases.py), config (bench.toml), prompts and
published numbers. Shipped in the wheel as the package data ``benchmark.builtin``."""
