"""What ``mypy --strict`` users see: ``@workflow``/``@step`` keep signatures, errors declare
their attributes, event names are a Literal; plus the run-time side of the same changes.

The type checks run mypy once (a module fixture) over one snippet written to a
temporary directory; each test asserts on what mypy said about the snippet's
lines, found by their ``# @key`` markers. mypy checks the ``durable`` package
this test imports (``MYPYPATH``), not whatever else may be installed.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest

import durable
from durable import errors
from durable._engine.events import EVENT_NAMES, TERMINAL_EVENTS, Event, EventBus, EventName

SNIPPET = textwrap.dedent('''
    from __future__ import annotations

    import durable
    from durable import Event, EventBus, Retry, step, workflow
    from durable._engine.events import EventName


    @workflow
    async def f(x: int) -> str:
        return str(x)


    @workflow(name="n", timeout=5)
    async def g(x: int, *, y: str = "") -> list[int]:
        return [x]


    @workflow(default_retry=Retry(max_attempts=2))
    async def h() -> None:
        pass


    @step
    async def s(x: int) -> bytes:
        return b""


    @step
    def sync_step(x: int) -> int:
        return x


    @step(name="named", timeout=5)
    async def named_step(x: int, *, y: str = "") -> list[str]:
        return [y]


    @step(retry=Retry(max_attempts=2))
    def named_sync(x: int) -> float:
        return 1.0


    @workflow  # @sync-workflow
    def not_async(x: int) -> int:  # @sync-workflow
        return x


    async def main() -> None:
        reveal_type(f)  # @f
        reveal_type(await f(1))  # @await-f
        await f("x")  # @f-bad-arg
        reveal_type(g)  # @g
        reveal_type(await g(1, y="a"))  # @await-g
        await g(1, y=2)  # @g-bad-arg
        reveal_type(h)  # @h
        reveal_type(s)  # @s
        reveal_type(await s(1))  # @await-s
        await s("x")  # @s-bad-arg
        reveal_type(sync_step)  # @sync-step
        reveal_type(named_step)  # @named-step
        reveal_type(await named_step(1, y="a"))  # @await-named-step
        await named_step("x")  # @named-step-bad-arg
        reveal_type(named_sync)  # @named-sync
        reveal_type(workflow("name"))  # @builder
        reveal_type(workflow.branch("b"))  # @branch
        workflow(nmae="n")  # @bad-option
        workflow(timeout="5")  # @bad-timeout


    def errors(e: durable.DurableError, sf: durable.StepFailed, pf: durable.ParallelFailed,
               mf: durable.MapFailed, cf: durable.ChildWorkflowFailed, st: durable.StoreError,
               se: durable.SerializationError) -> None:
        reveal_type(e.message)  # @message
        reveal_type(e.workflow)  # @workflow
        reveal_type(e.instance_id)  # @instance_id
        reveal_type(e.step)  # @step
        reveal_type(sf.attempts)  # @attempts
        reveal_type(pf.errors)  # @parallel-errors
        reveal_type(pf.attempts)  # @parallel-attempts
        reveal_type(mf.errors)  # @map-errors
        reveal_type(cf.child_id)  # @child_id
        reveal_type(cf.child_status)  # @child_status
        reveal_type(cf.child_error_type)  # @child_error_type
        reveal_type(st.path)  # @path
        reveal_type(se.message)  # @se-message
        reveal_type(se.step)  # @se-step


    def events(bus: EventBus, ev: Event) -> None:
        reveal_type(ev.name)  # @event-name
        bus.on("workflow.completed", print)  # @on-ok
        bus.on("*", print)  # @on-star
        bus.on("workflow.done", print)  # @on-bad
        bus.subscribe(names={"workflow.failed", "workflow.completed"})  # @subscribe-ok
        bus.subscribe(names={"workflow.done"})  # @subscribe-bad
        name: EventName = "workflow.done"  # @literal-bad
''')

# The snippet's lines where mypy must report an error (and nowhere else).
EXPECTED_ERRORS = {
    "f-bad-arg", "g-bad-arg", "s-bad-arg", "named-step-bad-arg", "sync-workflow", "bad-option", "bad-timeout",
    "subscribe-bad", "literal-bad", "on-bad",
}

_LINE = re.compile(r"^snippet\.py:(\d+): (error|note): (.*)$")


class MypyOutput:
    """mypy's messages about the snippet, by marker."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines_of: dict[str, list[int]] = {}  # (an error on a decorator may be on either line)
        for n, line in enumerate(SNIPPET.splitlines(), 1):
            for key in re.findall(r"# @([\w-]+)", line):
                self.lines_of.setdefault(key, []).append(n)
        self.messages: dict[int, list[tuple[str, str]]] = {}
        for line in text.splitlines():
            m = _LINE.match(line)
            if m:
                self.messages.setdefault(int(m[1]), []).append((m[2], m[3]))

    def revealed(self, key: str) -> str:
        """The revealed type on line ``key``, normalized (see ``_normalize``)."""
        found = [text for n in self.lines_of[key] for kind, text in self.messages.get(n, ())
                 if kind == "note" and text.startswith("Revealed type is ")]
        assert len(found) == 1, f"no reveal_type on line {key!r}:\n{self.text}"
        return _normalize(found[0].removeprefix("Revealed type is ").strip('"'))

    def errors(self, key: str) -> list[str]:
        return [text for n in self.lines_of[key] for kind, text in self.messages.get(n, ()) if kind == "error"]


def _normalize(revealed: str) -> str:
    """A revealed type as recent mypy versions print it: no ``builtins.``, ``X | Y`` for ``Union[X, Y]``."""
    revealed = revealed.replace("builtins.", "")
    for prefix, extra in (("Union[", []), ("Optional[", ["None"])):
        if revealed.startswith(prefix) and revealed.endswith("]"):
            return " | ".join([_normalize(p) for p in _split_top_level(revealed[len(prefix):-1])] + extra)
    return revealed


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [*parts, current.strip()]


def _mypy_env() -> dict[str, str]:
    env = dict(os.environ)
    root = Path(durable.__file__).resolve().parent.parent
    if root.name in ("site-packages", "dist-packages"):
        env.pop("MYPYPATH", None)  # an installed durable: mypy finds it there (it has py.typed)
    else:
        env["MYPYPATH"] = str(root)  # a source tree (or an editable install, which mypy cannot follow)
    return env


@pytest.fixture(scope="module")
def mypy(tmp_path_factory: pytest.TempPathFactory) -> MypyOutput:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install mypy): the static type checks need it")
    tmp = tmp_path_factory.mktemp("typing")
    (tmp / "snippet.py").write_text(SNIPPET)
    (tmp / "mypy.ini").write_text("[mypy]\n")  # not the project's configuration, whatever the cwd
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini", "--cache-dir", str(tmp / "cache"),
         "--show-error-codes", "--no-error-summary", "--no-color-output", "--no-pretty", "snippet.py"],
        cwd=tmp, env=_mypy_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode in (0, 1), f"mypy failed to run:\n{proc.stdout}\n{proc.stderr}"
    return MypyOutput(proc.stdout)


# -- @workflow and @step keep the function's signature ----------------------------


def test_workflow_decorator_keeps_signature(mypy: MypyOutput) -> None:
    """``@workflow`` on ``async def f(x: int) -> str`` is a WorkflowFunction of ``(x: int)`` giving str."""
    assert "WorkflowFunction[[x: int], str]" in mypy.revealed("f")
    assert mypy.revealed("await-f") == "str"
    assert any("incompatible type" in e and '"int"' in e and "[arg-type]" in e for e in mypy.errors("f-bad-arg"))


def test_workflow_with_options_keeps_signature(mypy: MypyOutput) -> None:
    """``@workflow(name=..., timeout=...)`` and ``@workflow(default_retry=...)`` keep it too."""
    g = mypy.revealed("g")
    assert "WorkflowFunction[[x: int, *, y: str" in g and g.endswith("], list[int]]")
    assert mypy.revealed("await-g") == "list[int]"
    assert any("[arg-type]" in e for e in mypy.errors("g-bad-arg"))
    assert "WorkflowFunction[[], None]" in mypy.revealed("h")


def test_workflow_options_are_typed(mypy: MypyOutput) -> None:
    """Unknown options, options of the wrong type and a sync function are type errors."""
    assert mypy.errors("bad-option")
    assert mypy.errors("bad-timeout")
    assert mypy.errors("sync-workflow")


def test_step_decorator_keeps_signature(mypy: MypyOutput) -> None:
    """``@step`` keeps the signature and the awaited result's type, for async and sync functions."""
    assert "StepFunction[[x: int], bytes]" in mypy.revealed("s")
    assert mypy.revealed("await-s") == "bytes"
    assert any("[arg-type]" in e for e in mypy.errors("s-bad-arg"))
    assert "StepFunction[[x: int], int]" in mypy.revealed("sync-step")
    assert "StepFunction[[x: int, *, y: str =], list[str]]" in mypy.revealed("named-step")
    assert mypy.revealed("await-named-step") == "list[str]"
    assert any("[arg-type]" in e for e in mypy.errors("named-step-bad-arg"))
    assert "StepFunction[[x: int], float]" in mypy.revealed("named-sync")


def test_workflow_name_gives_a_builder(mypy: MypyOutput) -> None:
    """``workflow("name")`` and ``workflow.branch("b")`` are WorkflowBuilders."""
    assert mypy.revealed("builder").endswith(".WorkflowBuilder")
    assert mypy.revealed("branch").endswith(".WorkflowBuilder")


# -- errors declare their attributes -------------------------------------------------


@pytest.mark.parametrize(("key", "expected"), [
    ("message", "str"),
    ("workflow", "str | None"),
    ("instance_id", "str | None"),
    ("step", "str | None"),
    ("attempts", "int | None"),
    ("parallel-errors", "dict[str, BaseException] | dict[int, BaseException]"),
    ("parallel-attempts", "int | None"),
    ("map-errors", "dict[int, BaseException]"),
    ("child_id", "str | None"),
    ("child_status", "str | None"),
    ("child_error_type", "str | None"),
    ("path", "str | None"),
    ("se-message", "str"),
    ("se-step", "str | None"),
])
def test_error_attributes_are_typed(mypy: MypyOutput, key: str, expected: str) -> None:
    """Each attribute an error carries reads with its declared type (not Any, not attr-defined)."""
    assert mypy.revealed(key) == expected
    assert not mypy.errors(key)


# -- event names -------------------------------------------------------------------------


def test_event_name_is_the_literal(mypy: MypyOutput) -> None:
    """``Event.name`` is the Literal of the nine names."""
    revealed = mypy.revealed("event-name")
    assert re.findall(r"'([\w.]+)'", revealed) == list(EVENT_NAMES)


def test_event_names_are_checked(mypy: MypyOutput) -> None:
    """The nine names and ``"*"`` are accepted; a set or variable of another name is refused."""
    for key in ("on-ok", "on-star", "subscribe-ok"):
        assert not mypy.errors(key), key
    assert any("workflow.done" in e for e in mypy.errors("subscribe-bad"))
    assert any("workflow.done" in e for e in mypy.errors("literal-bad"))


def test_on_refuses_an_unknown_name(mypy: MypyOutput) -> None:
    """``bus.on("workflow.done", ...)`` is a type error (it is a ValueError at run time)."""
    assert any("workflow.done" in e for e in mypy.errors("on-bad"))


def test_no_other_type_errors(mypy: MypyOutput) -> None:
    """mypy reports errors on the snippet's lines that should have them, and on no other."""
    expected = {n for key in EXPECTED_ERRORS for n in mypy.lines_of[key]}
    unexpected = [f"line {n}: {text}" for n, msgs in sorted(mypy.messages.items()) for kind, text in msgs
                  if kind == "error" and n not in expected]
    assert not unexpected, "\n".join(unexpected)
    for key in EXPECTED_ERRORS:
        assert mypy.errors(key), f"no error on line {key!r}:\n{mypy.text}"


def test_event_names_agree_with_the_literal() -> None:
    """EVENT_NAMES is the Literal's nine names in order; the terminal ones are among them."""
    assert EVENT_NAMES == typing.get_args(EventName)
    assert len(EVENT_NAMES) == len(set(EVENT_NAMES)) == 9
    assert EVENT_NAMES[0] == "workflow.started"
    assert TERMINAL_EVENTS == {"workflow.completed", "workflow.failed", "workflow.cancelled"}
    assert TERMINAL_EVENTS <= set(EVENT_NAMES)


def test_event_bus_takes_every_name_and_star_only() -> None:
    """At run time on() takes the nine names and "*" and refuses any other (as before)."""
    bus = EventBus()
    for name in (*EVENT_NAMES, "*"):
        bus.on(name, lambda e: None)()
    with pytest.raises(ValueError, match="unknown event 'workflow.done'"):
        bus.on("workflow.done", lambda e: None)


def test_event_name_is_stored_as_given() -> None:
    """Event(name=...) keeps the str it is given (no validation, no conversion)."""
    name = "".join(["workflow.", "started"])
    event = Event(name=name, instance_id="i", workflow_name="w")  # (Event() takes a str; .name reads as EventName)
    assert event.name is name
    assert event.to_dict() == {"name": name, "instance_id": "i", "workflow_name": "w"}


# -- errors: declared at run time, pickled as before ------------------------------------------

ATTRIBUTES: list[tuple[type[errors.DurableError], dict[str, Any]]] = [
    (errors.StepFailed, {"attempts": 3}),
    (errors.ParallelFailed, {"errors": {"a": ValueError("x")}}),
    (errors.MapFailed, {"errors": {1: KeyError("k")}}),
    (errors.ChildWorkflowFailed, {"child_id": "i.c", "child_status": "failed", "child_error_type": "ValueError"}),
    (errors.StoreError, {"path": "/s"}),
    (errors.SerializationError, {}),
]



def _pickler(protocol: int) -> Callable[[Any], Any]:
    return lambda obj: pickle.loads(pickle.dumps(obj, protocol=protocol))


PICKLERS: dict[str, Callable[[Any], Any]] = {
    **{f"pickle-{p}": _pickler(p) for p in range(pickle.HIGHEST_PROTOCOL + 1)},
    "cloudpickle": lambda obj: cloudpickle.loads(cloudpickle.dumps(obj)),
}


@pytest.mark.parametrize(("cls", "extra"), ATTRIBUTES, ids=[c.__name__ for c, _ in ATTRIBUTES])
def test_attributes_are_declared(cls: type[errors.DurableError], extra: dict[str, Any]) -> None:
    """Every attribute an error carries is in the class's (resolvable) annotations."""
    hints = typing.get_type_hints(cls)
    for name in ("message", "workflow", "instance_id", "step", *extra):
        assert name in hints, name


@pytest.mark.parametrize("how", list(PICKLERS))
@pytest.mark.parametrize(("cls", "extra"), ATTRIBUTES, ids=[c.__name__ for c, _ in ATTRIBUTES])
def test_pickled_error_keeps_its_attributes(cls: type[errors.DurableError], extra: dict[str, Any], how: str) -> None:
    """An error round-trips with its type, message, context and declared attributes."""
    e = cls("it broke", workflow="w", instance_id="i", step="s", **extra)
    back = PICKLERS[how](e)
    assert type(back) is cls and str(back) == str(e) == "it broke (workflow 'w', instance 'i', step 's')"
    assert (back.message, back.workflow, back.instance_id, back.step) == ("it broke", "w", "i", "s")
    for name, value in extra.items():
        got = getattr(back, name)
        if name == "errors":
            assert {k: (type(v), str(v)) for k, v in got.items()} == {k: (type(v), str(v)) for k, v in value.items()}
        else:
            assert got == value


def test_attributes_not_given_read_as_none_and_are_not_pickled() -> None:
    """Optional attributes not given read as the class default None, and stay out of the pickle."""
    for e, names in [
        (errors.StepFailed("failed", step="t"), ["attempts"]),
        (errors.ParallelFailed("failed", errors={"a": ValueError("x")}), ["attempts"]),
        (errors.ChildWorkflowFailed("failed"), ["child_id", "child_status", "child_error_type"]),
        (errors.StoreError("corrupt"), ["path"]),
    ]:
        for name in names:
            assert getattr(e, name) is None
            assert name not in vars(e) and name not in e.__reduce__()[2]
            back = pickle.loads(pickle.dumps(e))
            assert getattr(back, name) is None and name not in vars(back)


# Pickles (protocol 5) of errors made by durable 0.1.0's errors.py (commit 6dc3e09), as a
# checkpoint store holds them: they load with their attributes, and the same errors made
# today pickle to the same bytes.
OLD_PICKLES: list[tuple[bytes, Callable[[], errors.DurableError], dict[str, Any]]] = [
    (
        b'\x80\x05\x95\xc9\x00\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\nStepFailed\x94\x93\x94\x8c(failed after 3 attempt(s): ValueError: x\x94}\x94(\x8c\x08workflow\x94'
        b'\x8c\x01w\x94\x8c\x0binstance_id\x94\x8c\x01i\x94\x8c\x04step\x94\x8c\x01t\x94\x8c\x08attempts\x94K\x03u'
        b'\x87\x94R\x94}\x94(\x8c\x07message\x94h\x05h\x07h\x08h\th\nh\x0bh\x0ch\rK\x03\x8c\x07_fields\x94h\x06ub.',
        lambda: errors.StepFailed("failed after 3 attempt(s): ValueError: x", workflow="w", instance_id="i",
                                  step="t", attempts=3),
        {"attempts": 3, "step": "t"},
    ),
    (
        b'\x80\x05\x95\xe0\x00\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\x0eParallelFailed\x94\x93\x94\x8c\x161 of 2 branches failed\x94}\x94(\x8c\x08workflow\x94\x8c\x01w'
        b'\x94\x8c\x0binstance_id\x94\x8c\x01i\x94\x8c\x04step\x94\x8c\x01p\x94\x8c\x06errors\x94}\x94\x8c\x01a\x94'
        b'\x8c\x08builtins\x94\x8c\nValueError\x94\x93\x94\x8c\x01x\x94\x85\x94R\x94su\x87\x94R\x94}\x94(\x8c\x07'
        b'message\x94h\x05h\x07h\x08h\th\nh\x0bh\x0ch\rh\x0e\x8c\x07_fields\x94h\x06ub.',
        lambda: errors.ParallelFailed("1 of 2 branches failed", workflow="w", instance_id="i", step="p",
                                      errors={"a": ValueError("x")}),
        {"attempts": None, "step": "p"},
    ),
    (
        b'\x80\x05\x95\xcc\x00\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\tMapFailed\x94\x93\x94\x8c\x131 of 3 items failed\x94}\x94(\x8c\x08workflow\x94N\x8c\x0binstance_id'
        b'\x94N\x8c\x04step\x94\x8c\x01m\x94\x8c\x06errors\x94}\x94K\x01\x8c\x08builtins\x94\x8c\x08KeyError\x94'
        b'\x93\x94\x8c\x01k\x94\x85\x94R\x94su\x87\x94R\x94}\x94(\x8c\x07message\x94h\x05h\x07Nh\x08Nh\th\nh\x0bh'
        b'\x0c\x8c\x07_fields\x94h\x06ub.',
        lambda: errors.MapFailed("1 of 3 items failed", step="m", errors={1: KeyError("k")}),
        {"attempts": None, "workflow": None},
    ),
    (
        b'\x80\x05\x95\x02\x01\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\x13ChildWorkflowFailed\x94\x93\x94\x8c\x12child ended failed\x94}\x94(\x8c\x08workflow\x94\x8c\x01w'
        b'\x94\x8c\x0binstance_id\x94\x8c\x01i\x94\x8c\x04step\x94\x8c\x03c#1\x94\x8c\x08child_id\x94\x8c\x03i.c'
        b'\x94\x8c\x0cchild_status\x94\x8c\x06failed\x94\x8c\x10child_error_type\x94\x8c\nValueError\x94u\x87\x94R'
        b'\x94}\x94(\x8c\x07message\x94h\x05h\x07h\x08h\th\nh\x0bh\x0ch\rh\x0eh\x0fh\x10h\x11h\x12\x8c\x07_fields'
        b'\x94h\x06ub.',
        lambda: errors.ChildWorkflowFailed("child ended failed", workflow="w", instance_id="i", step="c#1",
                                           child_id="i.c", child_status="failed", child_error_type="ValueError"),
        {"child_id": "i.c", "child_status": "failed", "child_error_type": "ValueError"},
    ),
    (
        b'\x80\x05\x95\x9f\x00\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\nStoreError\x94\x93\x94\x8c\x0b/s: corrupt\x94}\x94(\x8c\x08workflow\x94N\x8c\x0binstance_id\x94N'
        b'\x8c\x04step\x94N\x8c\x04path\x94\x8c\x02/s\x94u\x87\x94R\x94}\x94(\x8c\x07message\x94h\x05h\x07Nh\x08Nh'
        b'\tNh\nh\x0b\x8c\x07_fields\x94h\x06ub.',
        lambda: errors.StoreError("/s: corrupt", path="/s"),
        {"path": "/s"},
    ),
    (
        b'\x80\x05\x95\xab\x00\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\x12SerializationError\x94\x93\x94\x8c\x13cannot checkpoint x\x94}\x94(\x8c\x08workflow\x94\x8c\x01w'
        b'\x94\x8c\x0binstance_id\x94\x8c\x01i\x94\x8c\x04step\x94\x8c\x01s\x94u\x87\x94R\x94}\x94(\x8c\x07message'
        b'\x94h\x05h\x07h\x08h\th\nh\x0bh\x0c\x8c\x07_fields\x94h\x06ub.',
        lambda: errors.SerializationError("cannot checkpoint x", workflow="w", instance_id="i", step="s"),
        {"message": "cannot checkpoint x", "instance_id": "i"},
    ),
    (
        b'\x80\x05\x95\x8e\x00\x00\x00\x00\x00\x00\x00\x8c\x0edurable.errors\x94\x8c\x08_rebuild\x94\x93\x94h\x00'
        b'\x8c\nStepFailed\x94\x93\x94\x8c\x06failed\x94}\x94(\x8c\x08workflow\x94N\x8c\x0binstance_id\x94N\x8c\x04'
        b'step\x94\x8c\x01t\x94u\x87\x94R\x94}\x94(\x8c\x07message\x94h\x05h\x07Nh\x08Nh\th\n\x8c\x07_fields\x94h'
        b'\x06ub.',
        lambda: errors.StepFailed("failed", step="t"),
        {"attempts": None, "step": "t"},
    ),
]


@pytest.mark.parametrize(("data", "make", "fields"), OLD_PICKLES,
                         ids=[make().__class__.__name__ + str(i) for i, (_, make, _) in enumerate(OLD_PICKLES)])
def test_old_pickles_load_and_pickling_is_unchanged(data: bytes, make: Callable[[], errors.DurableError],
                                                    fields: dict[str, Any]) -> None:
    """A 0.1.0 pickle loads with its attributes; today's error of the same content pickles to the same bytes."""
    old = pickle.loads(data)
    new = make()
    assert type(old) is type(new) and str(old) == str(new)
    for name, value in fields.items():
        assert getattr(old, name) == value
    assert vars(old).keys() == vars(new).keys()
    assert pickle.dumps(new, protocol=5) == data


def test_every_public_class_has_resolvable_annotations() -> None:
    """``typing.get_type_hints`` works on every public class (none names a type only a type checker sees)."""
    import durable.errors
    import durable.stores
    import durable.testing

    checked = 0
    for module in (durable, durable.errors, durable.stores, durable.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type):
                typing.get_type_hints(obj)
                checked += 1
    assert checked > 40
    assert "definition" in typing.get_type_hints(durable.ChildState)
