"""Clients: start, watch and control workflow instances from any code, with no engine in the caller.

:class:`Client` for plain code, :class:`AsyncClient` for asyncio or trio code.
Both are re-exported by :mod:`durable`.
"""

from ._async import AsyncClient, EventFeed
from ._ops import Page
from ._sync import Client

__all__ = ["AsyncClient", "Client", "EventFeed", "Page"]
