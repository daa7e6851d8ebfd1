"""Pickling a stored value: plain pickle when that is enough, cloudpickle otherwise; OS handles refused.

What the record codec (``serde.py``) calls for every value it stores.
Classes and functions of ``__main__`` are stored by value and loaded as the
loading process's own when it has them (:func:`_from_main`); open files,
sockets and other OS handles are refused (a ``TypeError``), never stored as
a husk that comes back as ``<class '_io.StringIO'>``.
"""

from __future__ import annotations

import _io
import io
import mmap
import pickle
import select
import socket
import sys
import threading
import types
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

__all__ = ["RefusedHandle", "pickle_value"]


# How protocol 4+ writes the module name of a global from __main__: SHORT_BINUNICODE,
# length 8. A plain string value "__main__" matches too (and just takes the slow path);
# a string such as "__main__.fn" does not.
_MAIN_GLOBAL = b"\x8c\x08__main__"
assert pickle.HIGHEST_PROTOCOL >= 4


def _from_main(qualname: str, by_value: bytes) -> Any:
    """A class or function of a ``__main__`` module, as stored by :func:`pickle_value`.

    This process's own if its ``__main__`` defines that name (the same script,
    resumed: an ``except MyError`` in the workflow must still match the
    replayed exception), else the copy stored by value (another program, such
    as the ``durable`` command, reading the record).
    """
    obj: Any = sys.modules.get("__main__")
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return pickle.loads(by_value)
    return obj


def _handle_types() -> tuple[type, ...]:
    # Concrete classes only, no ABC (an ABC's isinstance() costs ten times more,
    # and this one runs for every object pickled): _io._IOBase is the class
    # every io stream derives from, io.IOBase's Python subclasses included;
    # a selector holds one of select's objects.
    found: list[type] = [_io._IOBase, socket.socket, mmap.mmap]
    for name in ("epoll", "kqueue", "devpoll"):
        cls = getattr(select, name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


#: What is never stored: open files and streams (``io.IOBase``: files, ``StringIO``,
#: ``BytesIO``...), sockets, memory maps, selectors' OS objects. Pickle stores some
#: as they are (a ``StringIO``) and cloudpickle replaces an open text file by a
#: ``StringIO`` of its contents: either way, what a resumed workflow got back
#: would no longer be the handle it had.
_HANDLES = _handle_types()


class RefusedHandle(TypeError):
    """An OS handle (an open file, a socket) met while pickling: it is never stored."""


def _refused(obj: Any) -> RefusedHandle:
    cls = type(obj)
    return RefusedHandle(
        f"{cls.__module__}.{cls.__qualname__} is an open file, stream or socket (an OS handle or I/O "
        "state), which cannot be stored: pass its contents, or a path or URL to reopen, instead"
    )


class _Pickler(pickle.Pickler):
    """Plain (C) pickle that refuses :data:`_HANDLES`.

    ``reducer_override`` is not called for the exact builtin types (str, int,
    list, dict, tuple...): records of plain data pay nothing for it, other
    objects about 0.1 µs each.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _HANDLES):
            raise _refused(obj)
        return NotImplemented


class _MainAwarePickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with ``__main__``'s named classes and functions stored as :func:`_from_main` calls,
    refusing :data:`_HANDLES`."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _HANDLES):
            raise _refused(obj)
        if (isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__"
                and "<" not in getattr(obj, "__qualname__", "<")):
            return _from_main, (obj.__qualname__, cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        return super().reducer_override(obj)


_per_thread = threading.local()


def _plain_pickle(value: Any) -> bytes:
    """``value`` pickled by :class:`_Pickler`, as ``pickle.dumps`` would.

    Each thread reuses one pickler (its memo cleared after each use): making
    one costs about as much as pickling a small record. One that raised is
    dropped, and a nested call (a ``__reduce__`` that encodes) gets a new one.
    """
    pair: tuple[io.BytesIO, _Pickler] | None = _per_thread.__dict__.pop("pickler", None)
    if pair is None:
        buffer = io.BytesIO()
        pair = (buffer, _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL))
    buffer, pickler = pair
    pickler.dump(value)
    data = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    pickler.clear_memo()  # holds the objects just pickled
    _per_thread.pickler = pair
    return data


def pickle_value(value: Any) -> bytes:
    """``value`` pickled: plain :mod:`pickle` when that is enough, else cloudpickle.

    Plain pickle is about ten times faster, and stores classes and functions
    by reference, which is right for anything importable. cloudpickle is used
    when plain pickle cannot pickle the value (lambdas, local classes) or when
    the result refers to ``__main__``, whose names another process (a CLI, a
    worker started differently) could not import: cloudpickle stores those by
    value, and a named class or function of ``__main__`` loads as the loading
    process's own when its ``__main__`` defines that name (:func:`_from_main`).
    Both load with :func:`pickle.loads`. Both refuse open files, sockets and
    other OS handles (:data:`_HANDLES`, a ``TypeError``).
    """
    try:
        data = _plain_pickle(value)
    except RefusedHandle:
        raise
    except Exception:
        pass
    else:
        if _MAIN_GLOBAL not in data:
            return data
    buffer = io.BytesIO()
    _MainAwarePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()
