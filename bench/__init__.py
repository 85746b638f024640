"""Benchmarks (not tests): what the platform adds on top of the upstream calls it must make.

``python -m bench`` builds an isolated stack (temporary var dir, the sandbox with a fixed
runner latency, gunicorn, Celery workers), submits generations through the JSON API, then
runs a minimal script that makes the same upstream calls directly (the floor) against the
same sandbox, and reports both and their ratio. See ``docs/benchmarks.md``.

Speed goals live here, never in timed tests: every figure is a ratio against a baseline
measured in the same run on the same machine.
"""

from __future__ import annotations
