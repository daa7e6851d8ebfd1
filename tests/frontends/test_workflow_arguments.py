"""A @workflow's start() arguments: bound by name to its signature, checked against its annotations, and
converted by pydantic where it is installed (the ``validation`` extra)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import pytest

from durable import Engine, WorkflowFunction, workflow


@pytest.fixture
def no_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if pydantic were not installed: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, "pydantic", None)


@pytest.fixture
def with_pydantic() -> None:
    pytest.importorskip("pydantic")


def two_args() -> WorkflowFunction[[int, int], int]:
    """A new workflow each time: a workflow makes its checks at its first start()."""

    @workflow
    async def two_args(a: int, b: int) -> int:
        return a + b

    return two_args


def call(wf: WorkflowFunction[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    result: tuple[Any, tuple[Any, ...], dict[str, Any]] = wf.make_call(args, kwargs)
    return result


# -- by name ---------------------------------------------------------------------------


async def test_an_unexpected_keyword_argument_is_named(engine: Engine) -> None:
    """start(two_args, 1, c=2) says 'unexpected argument c', not 'missing b'; nothing is stored."""
    with pytest.raises(TypeError) as caught:
        await engine.workflows.start(two_args(), 1, c=2)
    text = str(caught.value)
    assert "workflow 'two_args'" in text and "unexpected argument 'c'" in text and "it takes a, b" in text
    assert "missing" not in text
    assert await engine.store.get_all_instances() == []


def test_other_binding_errors_name_the_workflow() -> None:
    wf = two_args()
    with pytest.raises(TypeError, match="workflow 'two_args': missing a required argument: 'b'"):
        call(wf, 1)
    with pytest.raises(TypeError, match="workflow 'two_args': too many positional arguments"):
        call(wf, 1, 2, 3)
    with pytest.raises(TypeError, match="workflow 'two_args': multiple values for argument 'a'"):
        call(wf, 1, a=1, b=2)

    @workflow
    async def positional_only(a: int, /) -> int:
        return a

    with pytest.raises(TypeError, match="unexpected argument 'a'"):
        call(positional_only, a=1)

    @workflow
    async def open_ended(a: int, **rest: Any) -> int:
        return a

    assert call(open_ended, 1, c=2)[0] == {"a": 1, "rest": {"c": 2}}


# -- without pydantic: simple checks, no conversion --------------------------------------


async def test_wrong_simple_types_are_refused_naming_the_parameter(no_pydantic: None, engine: Engine) -> None:
    """("x", "y") for two int parameters: a TypeError naming the workflow, the parameter and the value."""
    with pytest.raises(TypeError) as caught:
        await engine.workflows.start(two_args(), "x", "y")
    assert str(caught.value) == "workflow 'two_args': argument 'a' must be int, got 'x' (str)"
    assert await engine.store.get_all_instances() == []


def test_without_pydantic_nothing_is_converted(no_pydantic: None) -> None:
    """"5" is not an int without pydantic; values of the right type (an int for a float) pass as they are."""
    with pytest.raises(TypeError, match="argument 'b' must be int, got '5' \\(str\\)"):
        call(two_args(), 1, "5")

    @workflow
    async def simple(flag: bool, n: int, x: float, s: str, items: list[int], d: dict[str, Any] | None,
                     maybe: int | None = None, nothing: None = None) -> None:
        return None

    items = ["not", "checked"]  # list[int]: only the container is checked
    value, args, kwargs = call(simple, True, True, 3, "s", items, None, maybe=None)
    assert args[4] is items and type(args[2]) is int and args[1] is True
    assert value == {"flag": True, "n": True, "x": 3, "s": "s", "items": items, "d": None, "maybe": None}
    with pytest.raises(TypeError, match="argument 'flag' must be bool, got 1 \\(int\\)"):
        call(simple, 1, 1, 1.0, "s", [], {})
    with pytest.raises(TypeError, match="argument 'items' must be list\\[int\\], got \\(1, 2\\) \\(tuple\\)"):
        call(simple, True, 1, 1.0, "s", (1, 2), {})
    with pytest.raises(TypeError, match="argument 'd' must be dict\\[str, Any\\] \\| None, got \\[\\] \\(list\\)"):
        call(simple, True, 1, 1.0, "s", [], [])
    with pytest.raises(TypeError, match="argument 'nothing' must be NoneType, got 0"):
        call(simple, True, 1, 1.0, "s", [], {}, nothing=0)


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


def test_other_annotations_pass_through_without_pydantic(no_pydantic: None) -> None:
    @workflow
    async def complex_types(p: Point, t: tuple[int, int], a: Any, u) -> None:  # type: ignore[no-untyped-def]
        return None

    value, _, _ = call(complex_types, "not a point", "not a tuple", object, 1)
    assert value["p"] == "not a point" and value["t"] == "not a tuple"


# -- annotations that resolve late, or never -------------------------------------------


@workflow
async def uses_later(item: Later, n: int) -> int:
    return n


class Later:
    """Defined after the workflow that names it: resolved at the first start(), not at decoration."""


@workflow
async def uses_missing(item: NoSuchName, n: int) -> int:  # type: ignore[name-defined]  # noqa: F821
    return n


def test_an_annotation_defined_later_resolves_at_the_first_start(no_pydantic: None) -> None:
    uses_later._arguments = None  # (made afresh under this test's pydantic setting)
    value, _, _ = call(uses_later, Later(), 1)
    assert value["n"] == 1
    with pytest.raises(TypeError, match="argument 'n' must be int"):
        call(uses_later, Later(), "1")


def test_an_unresolvable_annotation_passes_through() -> None:
    uses_missing._arguments = None
    value, _, _ = call(uses_missing, object(), 2)
    assert value["n"] == 2
    with pytest.raises(TypeError, match="argument 'n' must be int"):
        call(uses_missing, "anything", "x")


def test_star_arguments_are_checked_item_by_item(no_pydantic: None) -> None:
    @workflow
    async def star(*numbers: int, **named: str) -> None:
        return None

    assert call(star, 1, 2, a="x")[1:] == ((1, 2), {"a": "x"})
    with pytest.raises(TypeError, match="argument 'numbers\\[1\\]' must be int, got 'b'"):
        call(star, 1, "b")
    with pytest.raises(TypeError, match="argument 'a' must be str, got 3"):
        call(star, a=3)


# -- with pydantic: lax conversion ----------------------------------------------------


async def test_pydantic_converts_json_ish_inputs(with_pydantic: None, engine: Engine) -> None:
    """"5" becomes 5 for an int; the converted values are what is stored and what the workflow gets."""
    wf = two_args()  # one workflow: another function under its name would be refused
    iid = await engine.workflows.start(wf, "5", b=2)
    inst = await engine.workflows.wait(iid)
    assert inst.output == 7 and inst.input == {"a": 5, "b": 2}
    assert inst.args == (5,) and inst.kwargs == {"b": 2}
    with pytest.raises(TypeError) as caught:
        await engine.workflows.start(wf, "x", "y")
    text = str(caught.value)
    assert text.startswith("workflow 'two_args': argument 'a' must be int, got 'x' (str): ")
    assert "valid integer" in text


def test_pydantic_keeps_values_of_the_right_type(with_pydantic: None) -> None:
    """Never changed: True for an int, an int for a float, the same list object, an instance of a class."""

    @workflow
    async def typed(n: int, x: float, items: list[int], when: Annotated[int, "meta"], p: Point | None) -> None:
        return None

    items = [1, 2]
    point = Point(1)
    value, args, _ = call(typed, True, 3, items, 4, point)
    assert args[0] is True and type(args[1]) is int and args[2] is items and args[4] is point
    value, args, _ = call(typed, "1", "2.5", ["3"], "4", None)
    assert args == (1, 2.5, [3], 4, None)
    with pytest.raises(TypeError, match="argument 'items' must be list\\[int\\], got \\['a'\\] \\(list\\): \\[0\\]"):
        call(typed, 1, 1.0, ["a"], 1, None)


try:
    import pydantic
except ImportError:
    pydantic = None  # type: ignore[assignment]

if pydantic is not None:
    class Order(pydantic.BaseModel):
        id: str
        qty: int

    @workflow
    async def place(order: Order) -> None:
        return None


def test_pydantic_models_are_built_from_dicts(with_pydantic: None) -> None:
    value, args, _ = call(place, {"id": "A", "qty": "2"})
    assert args[0] == Order(id="A", qty=2)
    order = Order(id="B", qty=1)
    assert call(place, order)[1][0] is order
    with pytest.raises(TypeError, match="argument 'order' must be .*Order.*\\['qty'\\]: Field required"):
        call(place, {"id": "A"})


def test_an_annotation_pydantic_cannot_handle_is_checked_as_without_it(with_pydantic: None) -> None:
    @workflow
    async def odd(points: list[Point], p: Point) -> None:
        return None

    value, _, _ = call(odd, ["anything"], "anything")
    assert value == {"points": ["anything"], "p": "anything"}
    with pytest.raises(TypeError, match="argument 'points' must be list\\["):
        call(odd, "no list", "anything")
