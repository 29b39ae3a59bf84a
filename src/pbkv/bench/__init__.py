"""Benchmark tooling: a closed-loop load generator, pbkv and Redis backends, local clusters.

``pbkv bench`` drives one system; ``python -m pbkv.bench.suite`` (``make bench``) runs pbkv and
Redis side by side and prints the table recorded in ``docs/performance.md``.
"""
