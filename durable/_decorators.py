"""The decorator front-end (``@workflow``, ``@step``): not built yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["decorate_workflow"]


def decorate_workflow(fn: Callable[..., Any], **options: Any) -> Any:
    raise NotImplementedError("@workflow on a function is not available yet: use workflow('name') builder")
