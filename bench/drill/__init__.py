"""The fault drill (``make drill`` = ``python -m bench.drill``): not a timed test.

On Postgres (a database of its own, created and dropped here) and Redis (a
``redis-server`` of its own on a free port), with the bench stack (sandbox, gunicorn,
real Celery worker processes), it submits generations through the JSON API at a steady
pace while it SIGKILLs workers, restarts Redis, drops the database's connections and
injects signer, runner and pymthouse faults through the sandbox's control API, all at
moments drawn from ``--seed``. It then lets reconcile settle what is left and reports,
from the database, the files and the sandbox's request log and usage events: generations
submitted, succeeded, failed by code, stuck, tickets per generation, images lost after
payment, and recovery after each outage. Results go to ``docs/reliability.md``.

Modules: ``infra`` (own Redis, own database), ``chaos`` (the plan and its executor),
``load`` (API submissions, the beat stand-in), ``run`` (Django-side reads, settling),
``tally`` (the figures), ``report`` (markdown).
"""

from __future__ import annotations
