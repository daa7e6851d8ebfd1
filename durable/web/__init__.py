"""The HTTP API, live event streams (Server-Sent Events) and the web dashboard.

``create_app(client)`` returns an ASGI app; ``durable serve MODULE...`` runs
it with Hypercorn (on trio, in the worker's own process). Needs the ``web``
extra: ``pip install 'durable[web]'``. See ``docs/web.md``.
"""

from ._app import DurableApp, create_app

__all__ = ["DurableApp", "create_app"]
