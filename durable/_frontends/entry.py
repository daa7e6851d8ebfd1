"""The ``workflow`` entry point: a builder for a name, the decorator for a function.

``workflow("process-order")`` starts a state-machine builder;
``workflow.branch("a")`` starts a parallel branch's builder; ``@workflow`` and
``@workflow(name=..., timeout=...)`` declare a decorator workflow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, final, overload

from .builder import WorkflowBuilder

if TYPE_CHECKING:
    # For the annotations only: decorate_workflow is imported when called, as before.
    from .._model.retry import Retry
    from .decorators import WorkflowFunction

__all__ = ["workflow"]

P = ParamSpec("P")
R = TypeVar("R")


@final
class _WorkflowEntry:
    """Build a workflow: ``workflow("name")...build()``, or decorate one with ``@workflow``.

    .. versionadded:: 0.1.0
    """

    @overload
    def __call__(self, name: str, /) -> WorkflowBuilder: ...

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> WorkflowFunction[P, R]: ...

    @overload
    def __call__(
        self, /, *, name: str | None = None, timeout: float | None = None, default_retry: Retry | None = None,
        queue: str | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], WorkflowFunction[P, R]]: ...

    # The overloads give the types; at run time the options go to decorate_workflow()
    # as given (it rejects unknown ones when the decorator is applied).
    def __call__(self, target: Any = None, /, **options: Any) -> Any:
        if isinstance(target, str):
            if options:
                raise TypeError("workflow('name') takes no options: set them on the builder")
            return WorkflowBuilder(target)
        from .decorators import decorate_workflow

        if target is None:
            return lambda fn: decorate_workflow(fn, **options)
        return decorate_workflow(target, **options)

    def branch(self, name: str) -> WorkflowBuilder:
        """A builder for one branch of a parallel state; finish it with ``.build()``."""
        return WorkflowBuilder(name)

    def __repr__(self) -> str:
        return "durable.workflow"


workflow = _WorkflowEntry()
