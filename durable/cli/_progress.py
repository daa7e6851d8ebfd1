"""Live progress of one instance run by ``durable run``, on stderr.

In a terminal: a rich progress bar showing the step running now, with retry
and failure lines printed above it. Elsewhere (a pipe, a log file, CI):
plain lines, one per step event. Fed by the engine's in-process events.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from .._engine.events import Event

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
        name, step = event.name, event.step_name
        if name == "workflow.progress" and event.progress is not None:
            self.percent = event.progress
            if self._bar is None and event.progress < 100:
                self.line(f"[{self.percent:3d}%] {event.current_step} completed")
            self._describe(f"{self.workflow}: {event.current_step}")
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
