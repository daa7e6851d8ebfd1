"""Module paths of durable 0.1.0 that stored records may still name, kept importable.

Stored payloads are cloudpickles, and a pickle names a class or function by
its module path: a store written before the layered layout holds
``durable._serde._from_main`` and ``durable._serde.UnpicklableError`` in its
records, and may hold durable's own values in step outputs
(``durable._catch.CaughtError`` from a builder handler's ``ctx.error``, a
``durable._retry.Retry``, a ``durable._records.InstanceStatus``...). Each old
path is registered here as an alias of the module that defines those names
now, so ``import durable._serde`` (which unpickling does) finds it. Importing
:mod:`durable` installs them; never remove one while stores written by that
release may exist.
"""

from __future__ import annotations

import sys
from types import ModuleType

from ._graph import catch, context
from ._model import records, retry, serde

__all__ = ["ALIASES"]

#: old module path -> the module that holds its names now
ALIASES: dict[str, ModuleType] = {
    "durable._serde": serde,
    "durable._records": records,
    "durable._retry": retry,
    "durable._catch": catch,
    "durable._context": context,
}

for _name, _module in ALIASES.items():
    sys.modules.setdefault(_name, _module)
