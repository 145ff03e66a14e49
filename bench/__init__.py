"""Side-by-side throughput/latency benchmark: Sluice vs procrastinate vs Celery.

Run with ``python -m bench`` (see bench/README.md).
"""
