"""Live progress of one instance run by ``durable run``, on stderr.

In a terminal: a rich progress bar showing the step running now, with retry
and failure lines printed above it. Elsewhere (a pipe, a log file, CI):
plain lines, one per step event. Fed by the engine's in-process events.
A step inside a map or a parallel is named with its item or branch, from the
event's ``step_key``: ``process_page [item 3] started``.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from .._engine.events import Event
from ._render import step_label

__all__ = ["Mode", "RunProgress", "choose_mode"]

Mode = Literal["bar", "plain", "none"]


def choose_mode(console: Console, quiet: bool) -> Mode:
    """``none`` if quiet, ``bar`` when stderr is an interactive terminal, else ``plain``.

    Interactive means a tty (``TTY_INTERACTIVE=1`` / ``0`` overrides, as in
    rich): ``FORCE_COLOR``, often set in CI, gives colours but no bar.
    """
    if quiet:
        return "none"
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        interactive = forced == "1"
    else:
        isatty = getattr(console.file, "isatty", None)
        interactive = bool(isatty()) if isatty is not None else False
    return "bar" if interactive and console.is_terminal else "plain"


class RunProgress:
    """Shows the events of one instance; use as a context manager around the run, listen with :meth:`on_event`."""

    def __init__(self, console: Console, mode: Mode, workflow: str) -> None:
        self.console = console
        self.mode = mode
        self.workflow = workflow
        self.instance_id: str | None = None
        self.percent = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._kinds: dict[str, str] = {}  # step_key -> "map" / "parallel", of those seen starting
        self._completed: tuple[str, str] | None = None  # (name, label) of the step whose completion came last

    def __enter__(self) -> RunProgress:
        if self.mode == "bar":
            self._bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.workflow, total=100)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def line(self, text: str) -> None:
        """Print one line (above the bar, if there is one)."""
        if self.mode == "none":
            return
        self.console.print(text, markup=False, highlight=False)

    def started(self, instance_id: str, note: str = "") -> None:
        """The instance is known: follow its events."""
        self.instance_id = instance_id
        self.line(f"durable: instance {instance_id} of {self.workflow}{note}")

    def _describe(self, text: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=text, completed=self.percent)

    def on_event(self, event: Event) -> None:
        """An engine listener: render ``event`` if it is this instance's."""
        if self.instance_id is None or event.instance_id != self.instance_id or self.mode == "none":
            return
        name = event.name
        if name == "workflow.step.started" and event.step_key and event.step_type in ("map", "parallel"):
            self._kinds[event.step_key] = event.step_type
        step = step_label(event.step_name, event.step_key, self._kinds) if event.step_name is not None else None
        if name == "workflow.step.completed" and event.step_name is not None:
            # Its workflow.progress comes next, naming the step without its key.
            self._completed = (event.step_name, str(step))
        elif name == "workflow.progress" and event.progress is not None:
            self.percent = event.progress
            current = event.current_step
            if self._completed is not None and self._completed[0] == current:
                current = self._completed[1]
            self._completed = None
            if self._bar is None and event.progress < 100:
                self.line(f"[{self.percent:3d}%] {current} completed")
            self._describe(f"{self.workflow}: {current}")
        elif name == "workflow.step.started":
            if self._bar is None:
                self.line(f"[{self.percent:3d}%] {step} started")
            self._describe(f"{self.workflow}: {step}")
        elif name == "workflow.step.retry":
            self.line(f"[{self.percent:3d}%] {step} attempt {event.attempt}/{event.max_attempts} failed, "
                      f"retrying in {event.delay or 0:g} s: {event.error}")
        elif name == "workflow.step.failed":
            self.line(f"[{self.percent:3d}%] {step} failed after {event.attempts} attempt(s): {event.error}")
        elif name == "workflow.completed":
            self.percent = 100
            self._describe(f"{self.workflow}: completed")
            if self._bar is None:
                self.line("[100%] completed")
        elif name in ("workflow.failed", "workflow.cancelled"):
            self._describe(f"{self.workflow}: {name.split('.')[1]}")
