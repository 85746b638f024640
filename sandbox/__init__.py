"""A local stand-in for the pymthouse billing server and the Livepeer signer, runner and gateway.

It is a separate process (``python -m sandbox``) that never imports the Django project.
See sandbox/README.md for the surface it serves, the control API and every departure
from the real services.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
