"""Benchmarks of the public catalogue against a live server, beside a pgbench baseline."""
