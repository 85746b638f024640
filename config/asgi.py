"""The web process: Django under ASGI (uvicorn; gunicorn with uvicorn workers in production).

ASGI so that the event streams and long polls of ``inference.api`` hold a connection
with a coroutine, not a thread (README.md, "Deploying on several machines"). Setting
``PIXELHOUSE_ASGI`` before the settings load makes every request close its database
connection (config/settings.py, ``CONN_MAX_AGE``).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["PIXELHOUSE_ASGI"] = "true"

from django.core.asgi import get_asgi_application

application = get_asgi_application()
