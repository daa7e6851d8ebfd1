"""Catch: matching a failed state's error against its catchers, and the error a handler sees.

A builder task, parallel or map state may carry ``catch=[Catch(errors=[...],
next="handler")]``. Once the state has failed for good (a task after its
retries), the interpreter tries the catchers in order; the first whose
``errors`` match sends the workflow to its ``next`` state, and the handler sees
the error as ``ctx.error`` (a :class:`CaughtError`).

Replay is exact: a failed task or parallel or map re-raises the exception
stored in its checkpoint, so the same catcher matches and the same handler
runs, without running the failed state again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import attrs

from ..errors import StepFailed

__all__ = ["ANY", "CaughtError", "error_matches", "unwrap"]

#: the error names that match any error
ANY = frozenset({"*", "States.ALL"})


def unwrap(error: BaseException) -> list[BaseException]:
    """``error``, then, while it is a plain :class:`StepFailed` wrapper, its cause: what a catcher matches.

    A builder task fails with ``StepFailed`` whose ``__cause__`` is the job's
    own error (``StepTimeout`` for a timed-out attempt); a parallel's or map's
    fail-fast error is the failed branch's error, wrapped the same way.
    """
    chain = [error]
    while type(chain[-1]) is StepFailed and chain[-1].__cause__ is not None and len(chain) < 16:
        chain.append(chain[-1].__cause__)
    return chain


def _names(error: BaseException) -> set[str]:
    names = {cls.__name__ for cls in type(error).__mro__}
    # An exception that could not be pickled is stored as a stand-in that keeps its type's name.
    stored = getattr(error, "type_name", None)
    if type(error).__name__ == "UnpicklableError" and isinstance(stored, str):
        names.add(stored.rsplit(".", 1)[-1])
    return names


def error_matches(error: BaseException, patterns: Sequence[type[BaseException] | str]) -> bool:
    """Whether ``error`` (or the job error it wraps) matches one of ``patterns``.

    A type matches by ``isinstance``; a string by the name of the error's
    class or of one of its base classes; ``"*"`` and ``"States.ALL"`` match
    anything.
    """
    chain = unwrap(error)
    for pattern in patterns:
        if isinstance(pattern, str):
            if pattern in ANY or any(pattern in _names(e) for e in chain):
                return True
        elif any(isinstance(e, pattern) for e in chain) or any(
            pattern.__name__ in _names(e) for e in chain if type(e).__name__ == "UnpicklableError"
        ):
            return True
    return False


@final
@attrs.frozen
class CaughtError:
    """The error a :class:`~durable.Catch` caught, as the handler sees it in ``ctx.error``.

    Attributes:
        state: the name of the state that failed.
        type: the class name of the error: for a task, the job's own error
            (``"ValueError"``), not the :class:`~durable.StepFailed` around it.
        message: that error's message.
        exception: that error itself.

    .. versionadded:: 0.1.0
    """

    state: str
    type: str
    message: str
    exception: BaseException = attrs.field(repr=False, eq=False)

    @classmethod
    def of(cls, state: str, error: BaseException) -> CaughtError:
        """The caught error of ``state`` failing with ``error`` (unwrapped from ``StepFailed``)."""
        root = unwrap(error)[-1]
        stored = getattr(root, "type_name", None)
        if type(root).__name__ == "UnpicklableError" and isinstance(stored, str):
            name, message = stored.rsplit(".", 1)[-1], str(getattr(root, "message", root))
        else:
            name, message = type(root).__name__, str(root)
        return cls(state=state, type=name, message=message, exception=root)
