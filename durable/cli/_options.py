"""Options shared by several commands, and the parsing of workflow inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._graph.states import Graph
from ._errors import CliError
from ._load import Workflow, name_of
from ._store import DEFAULT_STORE

__all__ = ["call_arguments", "modules_option", "parse_arg", "store_option"]

F = TypeVar("F", bound=Callable[..., Any])


def store_option(fn: F) -> F:
    """``--store PATH|URL`` (also ``$DURABLE_STORE``; default ``./durable.lmdb``)."""
    return click.option(
        "--store", "-s", default=DEFAULT_STORE, show_default=True, envvar="DURABLE_STORE", metavar="PATH|URL",
        help="The LMDB store directory, or a postgresql:// URL (?schema=NAME for a schema other than 'durable'; "
             "also $DURABLE_STORE).",
    )(fn)


def modules_option(fn: F) -> F:
    """``--module FILE_OR_MODULE``, repeatable: modules to import first."""
    return click.option(
        "--module", "-m", "modules", multiple=True, metavar="FILE_OR_MODULE",
        help="Import this file or module first (repeatable): for the workflow's graph, or for stored "
             "values of its types.",
    )(fn)


def parse_arg(text: str, what: str = "an argument") -> Any:
    """A command-line argument as JSON if it parses (``42``, ``true``, ``{"a": 1}``), else the string.

    Text that starts like a JSON object, list or string (``{``, ``[``, ``"``)
    but does not parse is a mistake, not a string: a one-line error.
    """
    try:
        return json.loads(text)
    except ValueError as exc:
        if text.lstrip()[:1] in ('{', '[', '"'):
            raise CliError(f"{what} is not valid JSON: {exc}: {text[:60]!r}", exit_code=2) from None
        return text


def call_arguments(workflow: Workflow, args: tuple[str, ...], input_json: str | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of ``start()`` for ``durable run``.

    - ``ARGS``: each is JSON if it parses, else a string. A builder workflow
      takes one (its input); a ``@workflow`` function takes them as its
      positional arguments.
    - ``--input JSON``: a builder workflow's input; for a ``@workflow``
      function, a JSON list (its positional arguments) or object (its keyword
      arguments).
    """
    builder = isinstance(workflow, Graph)
    if input_json is not None:
        if args:
            raise CliError("give the input either as ARGS or with --input, not both", exit_code=2)
        try:
            value = json.loads(input_json)
        except ValueError as exc:
            raise CliError(f"--input is not valid JSON: {exc}", exit_code=2) from None
        if builder:
            return (value,), {}
        if isinstance(value, list):
            return _checked(workflow, tuple(value), {})
        if isinstance(value, dict):
            return _checked(workflow, (), value)
        raise CliError(
            f"--input for the @workflow function {name_of(workflow)!r} must be a JSON list (its positional "
            "arguments) or a JSON object (its keyword arguments); pass a single value as an argument instead",
            exit_code=2,
        )
    values = tuple(parse_arg(a, f"ARG {i + 1}") for i, a in enumerate(args))
    if builder and len(values) > 1:
        raise CliError(
            f"{name_of(workflow)!r} is a builder workflow: it takes one input value, got {len(values)} "
            "(quote a JSON value, or use --input JSON)",
            exit_code=2,
        )
    return _checked(workflow, values, {})


def _checked(workflow: Workflow, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    # Checked against the function's signature before any store is opened or created.
    if not isinstance(workflow, Graph):
        try:
            workflow.make_call(args, kwargs)
        except TypeError as exc:
            raise CliError(str(exc), exit_code=2) from None
    return args, kwargs
