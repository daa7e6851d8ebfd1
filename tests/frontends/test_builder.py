"""The state-machine builder and graph validation (durable/_frontends/builder.py, durable/_graph/validate.py)."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import pytest

from durable import ChoiceState, Graph, GraphError, ParallelState, PassState, Retry, TaskState, When, workflow
from durable._frontends.builder import WorkflowBuilder


def job_fn(x: Any) -> Any:
    """A module-level job used as a callable."""
    return x


class CallableJob:
    """A job given as an object with ``__call__``."""

    def __call__(self, x: Any) -> Any:
        return x


def add(a: int, b: int) -> int:
    """Wrapped in functools.partial below."""
    return a + b


def _assert_graph_error(exc: BaseException, wf: str, step: str | None) -> None:
    assert isinstance(exc, GraphError)
    assert isinstance(exc, ValueError)
    assert exc.workflow == wf
    assert f"workflow {wf!r}" in str(exc)
    if step is not None:
        assert exc.step == step
        assert f"step {step!r}" in str(exc)


def _branch(name: str, *states: str) -> Graph:
    b = workflow.branch(name)
    for s in states:
        b = b.task(s, job="j")
    return b.build()


# -- the entry point ---------------------------------------------------------


def test_workflow_name_returns_builder() -> None:
    """workflow("name") and workflow.branch("name") both return a WorkflowBuilder."""
    assert isinstance(workflow("w"), WorkflowBuilder)
    assert isinstance(workflow.branch("b"), WorkflowBuilder)


def test_workflow_name_rejects_options_and_empty_name() -> None:
    """workflow("name", option=...) and an empty name are TypeErrors."""
    with pytest.raises(TypeError):
        workflow("w", timeout=3)
    with pytest.raises(TypeError):
        workflow("")
    with pytest.raises(TypeError):
        workflow.branch("")


def test_every_builder_method_returns_the_builder() -> None:
    """Each builder method returns the same builder so calls chain."""
    b = workflow("w")
    assert b.task("a", job="j") is b
    assert b.choice("c", choices=[When(lambda ctx: True, "d")], default="d") is b
    assert b.parallel("d", branches=[_branch("x", "x1")]) is b
    assert b.pass_("e") is b
    assert b.end("f") is b
    assert b.default_retry(Retry(max_attempts=2)) is b
    assert b.timeout(5) is b


# -- task --------------------------------------------------------------------


def test_task_with_job_name() -> None:
    """A task given a job name stores the name and no function."""
    g = workflow("w").task("a", job="jobs.fetch").build()
    s = g.state("a")
    assert isinstance(s, TaskState)
    assert s.job == "jobs.fetch"
    assert s.fn is None
    assert s.type == "task"


def test_task_with_callable_job() -> None:
    """A task given a callable stores it and names the job module.qualname."""
    g = workflow("w").task("a", job=job_fn).build()
    s = g.state("a")
    assert isinstance(s, TaskState)
    assert s.fn is job_fn
    assert s.job == f"{job_fn.__module__}.job_fn"


def test_task_with_lambda_and_local_function() -> None:
    """Lambdas and local functions are named by module and qualname."""

    def local(x: Any) -> Any:
        return x

    lam = lambda x: x  # noqa: E731
    g = workflow("w").task("a", job=local).task("b", job=lam).build()
    assert g.state("a").job == f"{__name__}.test_task_with_lambda_and_local_function.<locals>.local"  # type: ignore[union-attr]
    assert g.state("b").job == f"{__name__}.test_task_with_lambda_and_local_function.<locals>.<lambda>"  # type: ignore[union-attr]


def test_callable_job_name_does_not_depend_on_object_identity() -> None:
    """A callable object's or partial's job name is the same each time the workflow is built.

    The job name is checkpointed as the step's ``function`` and compared on
    replay, so it must not contain a memory address that changes per process.
    """
    first = workflow("w").task("a", job=CallableJob()).task("b", job=functools.partial(add, 1)).build()
    second = workflow("w").task("a", job=CallableJob()).task("b", job=functools.partial(add, 1)).build()
    for name in ("a", "b"):
        job1 = first.state(name).job  # type: ignore[union-attr]
        job2 = second.state(name).job  # type: ignore[union-attr]
        assert "0x" not in job1
        assert job1 == job2


def test_task_job_of_wrong_type_is_type_error() -> None:
    """A job that is neither a str nor callable is a TypeError."""
    with pytest.raises(TypeError):
        workflow("w").task("a", job=42)  # type: ignore[arg-type]


def test_task_stores_input_output_retry_timeout() -> None:
    """input, output, retry and timeout given to task() are stored on the state."""

    def inp(ctx: Any) -> Any:
        return 1

    def out(result: Any, ctx: Any) -> Any:
        return result

    r = Retry(max_attempts=3)
    s = workflow("w").task("a", job="j", input=inp, output=out, retry=r, timeout=2.5).build().state("a")
    assert isinstance(s, TaskState)
    assert s.input is inp
    assert s.output is out
    assert s.retry is r
    assert s.timeout == 2.5


def test_task_defaults() -> None:
    """A bare task has no input/output/retry/timeout and, alone, ends the workflow."""
    s = workflow("w").task("a", job="j").build().state("a")
    assert isinstance(s, TaskState)
    assert (s.input, s.output, s.retry, s.timeout, s.next, s.end) == (None, None, None, None, None, True)


def test_task_explicit_next_and_end() -> None:
    """Explicit next and end are kept as given."""
    g = workflow("w").task("a", job="j", next="c").task("b", job="j", end=True).task("c", job="j", next="b").build()
    assert g.state("a").next == "c"
    assert g.state("b").end is True and g.state("b").next is None
    assert g.state("c").next == "b" and g.state("c").end is False


# -- choice ------------------------------------------------------------------


def test_choice_stores_rules_and_default() -> None:
    """A choice keeps its When rules (as a tuple, in order) and its default."""

    def cond(ctx: Any) -> bool:
        return True

    rules = [When(cond, "b"), When(lambda ctx: False, "c", label="never")]
    g = workflow("w").choice("a", choices=rules, default="c").task("b", job="j", end=True).end("c").build()
    s = g.state("a")
    assert isinstance(s, ChoiceState)
    assert s.choices == tuple(rules)
    assert s.choices[0].condition is cond and s.choices[0].next == "b" and s.choices[0].label is None
    assert s.choices[1].label == "never"
    assert s.default == "c"
    assert s.type == "choice" and s.next is None and s.end is False


def test_choice_without_default() -> None:
    """A choice may have rules and no default."""
    g = workflow("w").choice("a", choices=[When(lambda ctx: True, "b")]).end("b").build()
    assert g.state("a").default is None  # type: ignore[union-attr]


def test_choice_only_default() -> None:
    """A choice may have only a default."""
    g = workflow("w").choice("a", choices=[], default="b").end("b").build()
    s = g.state("a")
    assert isinstance(s, ChoiceState) and s.choices == () and s.default == "b"


def test_choice_rejects_non_when_rules() -> None:
    """A choice rule that is not a When is a TypeError."""
    with pytest.raises(TypeError):
        workflow("w").choice("a", choices=[(lambda ctx: True, "b")])  # type: ignore[list-item]


def test_loop_through_choice_is_allowed() -> None:
    """A loop back through a choice is valid when the choice can also reach an end."""
    g = (
        workflow("w")
        .task("a", job="j")
        .choice("c", choices=[When(lambda ctx: True, "a")], default="done")
        .end("done")
        .build()
    )
    assert g.state("a").next == "c"


# -- parallel ----------------------------------------------------------------


def test_parallel_stores_branches_and_on_error() -> None:
    """A parallel state keeps its built branch graphs in order and its on_error."""
    x = _branch("x", "x1", "x2")
    y = _branch("y", "y1")
    g = workflow("w").parallel("p", branches=[x, y], on_error="wait-all").build()
    s = g.state("p")
    assert isinstance(s, ParallelState)
    assert s.branches == (x, y)
    assert s.on_error == "wait-all"
    assert s.type == "parallel"
    assert s.end is True


@pytest.mark.parametrize("on_error", ["fail-fast", "wait-all"])
def test_parallel_accepts_both_on_error_values(on_error: str) -> None:
    """on_error accepts 'fail-fast' and 'wait-all'."""
    g = workflow("w").parallel("p", branches=[_branch("x", "x1")], on_error=on_error).build()  # type: ignore[arg-type]
    assert g.state("p").on_error == on_error  # type: ignore[union-attr]


def test_parallel_on_error_defaults_to_fail_fast() -> None:
    """on_error defaults to 'fail-fast'."""
    g = workflow("w").parallel("p", branches=[_branch("x", "x1")]).build()
    assert g.state("p").on_error == "fail-fast"  # type: ignore[union-attr]


def test_parallel_branch_graphs_are_validated_at_branch_build() -> None:
    """A branch builder's build() validates and falls through like a workflow's."""
    b = workflow.branch("x").task("x1", job="j").task("x2", job="j").build()
    assert b.name == "x"
    assert b.state("x1").next == "x2" and b.state("x2").end is True


def test_parallel_rejects_unbuilt_branches() -> None:
    """A branch that is not a built Graph is a TypeError."""
    with pytest.raises(TypeError):
        workflow("w").parallel("p", branches=[workflow.branch("x").task("x1", job="j")])  # type: ignore[list-item]


def test_parallel_explicit_next() -> None:
    """A parallel state's explicit next is kept."""
    g = (
        workflow("w")
        .choice("c", choices=[When(lambda ctx: True, "y")], default="p")
        .parallel("p", branches=[_branch("x", "x1")], next="z")
        .end("y")
        .end("z")
        .build()
    )
    assert g.state("p").next == "z"


# -- pass / end --------------------------------------------------------------


def test_pass_with_transform() -> None:
    """pass_ stores its transform and no result."""

    def tf(ctx: Any) -> Any:
        return 1

    s = workflow("w").pass_("a", transform=tf).build().state("a")
    assert isinstance(s, PassState)
    assert s.transform is tf and s.result is None and s.type == "pass"


def test_pass_with_result() -> None:
    """pass_ stores a static result."""
    s = workflow("w").pass_("a", result={"k": 1}).build().state("a")
    assert isinstance(s, PassState)
    assert s.result == {"k": 1} and s.transform is None


def test_pass_with_falsy_result_and_transform_is_allowed() -> None:
    """A falsy (non-None) result is a result: with a transform it is still refused."""
    with pytest.raises(GraphError):
        workflow("w").pass_("a", transform=lambda ctx: 1, result=0)


def test_end_shorthand_is_an_ending_pass() -> None:
    """end(name) adds a pass state with end=True and nothing else."""
    g = workflow("w").task("a", job="j").end("done").build()
    assert g.state("a").next == "done"
    s = g.state("done")
    assert isinstance(s, PassState)
    assert s.end is True and s.next is None and s.transform is None and s.result is None


def test_end_in_the_middle_stops_fall_through() -> None:
    """A state after end(name) is not reached by fall-through, so it is unreachable."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j").end("done").task("after", job="j").build()
    _assert_graph_error(ei.value, "w", "after")


# -- workflow-level settings --------------------------------------------------


def test_default_retry_and_timeout_are_stored_on_graph() -> None:
    """default_retry and timeout end up on the built Graph (timeout as float)."""
    r = Retry(max_attempts=4)
    g = workflow("w").default_retry(r).timeout(10).task("a", job="j").build()
    assert g.default_retry is r
    assert g.timeout == 10.0 and isinstance(g.timeout, float)
    assert g.source == "builder"
    assert g.name == "w"


def test_graph_defaults_without_settings() -> None:
    """Without default_retry or timeout the graph has None for both."""
    g = workflow("w").task("a", job="j").build()
    assert g.default_retry is None and g.timeout is None


def test_default_retry_rejects_non_retry() -> None:
    """default_retry with something other than a Retry is a TypeError."""
    with pytest.raises(TypeError):
        workflow("w").default_retry({"max_attempts": 3})  # type: ignore[arg-type]


def test_build_returns_graph_and_can_be_called_twice() -> None:
    """build() returns an equal Graph each time it is called."""
    b = workflow("w").task("a", job="j").task("b", job="j")
    g1, g2 = b.build(), b.build()
    assert isinstance(g1, Graph)
    assert g1 == g2


# -- fall-through ------------------------------------------------------------


def test_fall_through_to_next_declared_state() -> None:
    """A state without next/end goes to the next declared state; the last gets end=True."""
    g = (
        workflow("w")
        .task("a", job="j")
        .pass_("b")
        .parallel("c", branches=[_branch("x", "x1")])
        .task("d", job="j")
        .build()
    )
    assert [s.name for s in g.states] == ["a", "b", "c", "d"]
    assert g.state("a").next == "b" and g.state("a").end is False
    assert g.state("b").next == "c"
    assert g.state("c").next == "d"
    assert g.state("d").next is None and g.state("d").end is True


def test_fall_through_skips_choice_states() -> None:
    """A choice never falls through; the state after it falls through as usual."""
    g = (
        workflow("w")
        .task("a", job="j")
        .choice("c", choices=[When(lambda ctx: True, "b")], default="d")
        .task("b", job="j")
        .task("d", job="j")
        .build()
    )
    c = g.state("c")
    assert c.next is None and c.end is False
    assert g.state("a").next == "c"
    assert g.state("b").next == "d"
    assert g.state("d").end is True


def test_explicit_next_is_not_overridden_by_fall_through() -> None:
    """A state with an explicit next keeps it; fall-through applies only to unset ones."""
    g = (
        workflow("w")
        .task("a", job="j", next="c")
        .task("b", job="j")
        .choice("c", choices=[When(lambda ctx: True, "b")], default="d")
        .task("d", job="j", next="e")
        .end("e")
        .build()
    )
    assert g.state("a").next == "c"  # explicit, though fall-through would give "b"
    assert g.state("b").next == "c"  # fall-through
    assert g.state("d").next == "e" and g.state("d").end is False


def test_builder_states_are_not_mutated_by_build() -> None:
    """Fall-through resolution does not change what a later build() sees."""
    b = workflow("w").task("a", job="j")
    g1 = b.build()
    assert g1.state("a").end is True
    b.task("b", job="j")
    g2 = b.build()
    assert g2.state("a").next == "b" and g2.state("a").end is False
    assert g2.state("b").end is True


# -- GraphError cases ---------------------------------------------------------


def test_error_unknown_next_target_of_task() -> None:
    """A task's next naming no state is a GraphError naming the workflow and the task."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j", next="nope").build()
    _assert_graph_error(ei.value, "w", "a")
    assert "'nope'" in str(ei.value)


def test_error_unknown_choice_target() -> None:
    """A choice rule naming no state is a GraphError naming the choice."""
    with pytest.raises(GraphError) as ei:
        workflow("w").choice("c", choices=[When(lambda ctx: True, "nope")], default="b").end("b").build()
    _assert_graph_error(ei.value, "w", "c")
    assert "'nope'" in str(ei.value)


def test_error_unknown_choice_default() -> None:
    """A choice default naming no state is a GraphError naming the choice."""
    with pytest.raises(GraphError) as ei:
        workflow("w").choice("c", choices=[When(lambda ctx: True, "b")], default="nope").end("b").build()
    _assert_graph_error(ei.value, "w", "c")
    assert "'nope'" in str(ei.value)


def test_error_unknown_next_of_parallel_and_pass() -> None:
    """Unknown next on a parallel or pass state is a GraphError naming that state."""
    with pytest.raises(GraphError) as ei:
        workflow("w").parallel("p", branches=[_branch("x", "x1")], next="nope").build()
    _assert_graph_error(ei.value, "w", "p")
    with pytest.raises(GraphError) as ei:
        workflow("w").pass_("q", next="nope").build()
    _assert_graph_error(ei.value, "w", "q")


def test_error_duplicate_state_names() -> None:
    """Two states with one name is a GraphError naming that name."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j").pass_("a").build()
    _assert_graph_error(ei.value, "w", "a")
    assert "duplicate" in str(ei.value)


def test_error_next_and_end_together() -> None:
    """A state with both next and end is a GraphError naming it."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j", next="b", end=True).end("b").build()
    _assert_graph_error(ei.value, "w", "a")
    with pytest.raises(GraphError) as ei:
        workflow("w").pass_("a", next="b", end=True).end("b").build()
    _assert_graph_error(ei.value, "w", "a")


def test_error_no_reachable_end() -> None:
    """An a->b->a loop via explicit next has no reachable end: GraphError naming the start."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j", next="b").task("b", job="j", next="a").build()
    _assert_graph_error(ei.value, "w", "a")
    assert "end" in str(ei.value)


def test_error_no_reachable_end_though_one_exists() -> None:
    """An end that exists but is only reachable from an unreachable state is still an error."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j", next="b").task("b", job="j", next="a").end("z").build()
    _assert_graph_error(ei.value, "w", None)
    assert ei.value.step in ("a", "z")


def test_error_unreachable_state() -> None:
    """A state nothing leads to is a GraphError naming it."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j", end=True).task("orphan", job="j").build()
    _assert_graph_error(ei.value, "w", "orphan")
    assert "unreachable" in str(ei.value)


def test_error_parallel_without_branches() -> None:
    """A parallel state with no branches is a GraphError naming it."""
    with pytest.raises(GraphError) as ei:
        workflow("w").parallel("p", branches=[]).build()
    _assert_graph_error(ei.value, "w", "p")


def test_error_choice_without_choices_or_default() -> None:
    """A choice with neither rules nor default is a GraphError naming it."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j").choice("c", choices=[]).build()
    _assert_graph_error(ei.value, "w", "c")


def test_error_duplicate_branch_names() -> None:
    """Two branches of one parallel with the same name is a GraphError naming the parallel and branch."""
    with pytest.raises(GraphError) as ei:
        workflow("w").parallel("p", branches=[_branch("x", "x1"), _branch("x", "x2")]).build()
    _assert_graph_error(ei.value, "w", "p")
    assert "'x'" in str(ei.value)


def test_error_invalid_branch_graph_names_nested_path() -> None:
    """An invalid branch graph (built without the builder) is reported as workflow/parallel/branch."""
    bad = Graph("b", (TaskState(name="x1", job="j", next="nope"),))
    with pytest.raises(GraphError) as ei:
        workflow("w").parallel("p", branches=[_branch("ok", "o1"), bad]).build()
    _assert_graph_error(ei.value, "w/p/b", "x1")


def test_error_invalid_branch_in_nested_parallel() -> None:
    """A bad graph nested in parallels is reported with the full workflow/parallel/branch path."""
    bad = Graph("b", (PassState(name="q", end=True), PassState(name="orphan", end=True)))
    with pytest.raises(GraphError) as ei:
        workflow.branch("outer").parallel("inner", branches=[bad]).build()
    _assert_graph_error(ei.value, "outer/inner/b", "orphan")
    good_outer = Graph("outer", (ParallelState(name="inner", branches=(bad,), end=True),))
    with pytest.raises(GraphError) as ei:
        workflow("w").parallel("p", branches=[good_outer]).build()
    _assert_graph_error(ei.value, "w/p/outer/inner/b", "orphan")


def test_error_branch_builder_validates_itself() -> None:
    """A branch builder's build() raises GraphError naming the branch."""
    with pytest.raises(GraphError) as ei:
        workflow.branch("x").task("x1", job="j", next="nope").build()
    _assert_graph_error(ei.value, "x", "x1")


def test_error_pass_with_transform_and_result() -> None:
    """pass_ with both transform and result is a GraphError naming it, raised at once."""
    with pytest.raises(GraphError) as ei:
        workflow("w").pass_("a", transform=lambda ctx: 1, result=2)
    _assert_graph_error(ei.value, "w", "a")


def test_error_bad_on_error() -> None:
    """An on_error other than fail-fast/wait-all is a GraphError naming the parallel."""
    with pytest.raises(GraphError) as ei:
        workflow("w").parallel("p", branches=[_branch("x", "x1")], on_error="ignore")  # type: ignore[arg-type]
    _assert_graph_error(ei.value, "w", "p")
    assert "'ignore'" in str(ei.value)


@pytest.mark.parametrize("bad", [0, -1, -0.5])
def test_error_task_timeout_not_positive(bad: float) -> None:
    """A task timeout <= 0 is a GraphError naming the task."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("a", job="j", timeout=bad)
    _assert_graph_error(ei.value, "w", "a")


@pytest.mark.parametrize("bad", [0, -3])
def test_error_workflow_timeout_not_positive(bad: float) -> None:
    """A workflow timeout <= 0 is a GraphError naming the workflow."""
    with pytest.raises(GraphError) as ei:
        workflow("w").timeout(bad)
    _assert_graph_error(ei.value, "w", None)


def test_error_non_retry_retry_is_type_error() -> None:
    """A task retry that is not a Retry is a TypeError (not a GraphError)."""
    with pytest.raises(TypeError) as ei:
        workflow("w").task("a", job="j", retry={"max_attempts": 3})  # type: ignore[arg-type]
    assert not isinstance(ei.value, GraphError)
    assert "'a'" in str(ei.value)


def test_error_empty_workflow() -> None:
    """Building a workflow with no states is a GraphError naming the workflow."""
    with pytest.raises(GraphError) as ei:
        workflow("empty").build()
    _assert_graph_error(ei.value, "empty", None)


def test_error_empty_state_name() -> None:
    """An empty state name is a GraphError naming the workflow."""
    with pytest.raises(GraphError) as ei:
        workflow("w").task("", job="j")
    _assert_graph_error(ei.value, "w", None)


def test_graph_error_is_catchable_as_value_error() -> None:
    """Build errors can be caught with a plain except ValueError."""
    try:
        workflow("w").build()
    except ValueError as e:
        assert type(e) is GraphError
    else:  # pragma: no cover
        pytest.fail("no error raised")


# -- Graph helpers -----------------------------------------------------------


def _nested_graph() -> Graph:
    return (
        workflow("w")
        .task("a", job="j")
        .parallel("p", branches=[_branch("x", "x1", "x2"), _branch("y", "y1")])
        .task("z", job="j")
        .build()
    )


def test_graph_state_lookup_and_contains() -> None:
    """state(name) returns the state; `in` tests names; unknown names are KeyError / False."""
    g = _nested_graph()
    assert g.state("a").name == "a"
    assert isinstance(g.state("p"), ParallelState)
    assert "a" in g and "p" in g and "z" in g
    assert "x1" not in g  # branch states belong to the branch graph
    assert "nope" not in g
    assert 3 not in g
    with pytest.raises(KeyError):
        g.state("nope")


def test_graph_start_is_first_declared_state() -> None:
    """start is the first declared state's name, and None for an empty (recorded) graph."""
    assert _nested_graph().start == "a"
    assert Graph("r", (), source="recorded").start is None


def test_graph_walk_order_includes_branch_states() -> None:
    """walk() yields states depth first, each parallel followed by its branches' states."""
    assert [s.name for s in _nested_graph().walk()] == ["a", "p", "x1", "x2", "y1", "z"]


def test_graph_walk_nested_parallels() -> None:
    """walk() descends into parallels inside branches."""
    inner = workflow.branch("b").parallel("q", branches=[_branch("c", "c1")]).task("b2", job="j").build()
    g = workflow("w").parallel("p", branches=[inner]).build()
    assert [s.name for s in g.walk()] == ["p", "q", "c1", "b2"]
    assert g.total_steps == 4


def test_graph_total_steps_counts_branch_states() -> None:
    """total_steps counts every state, including those inside branches."""
    g = _nested_graph()
    assert g.total_steps == 6
    assert len(g.states) == 3
    assert workflow("w").task("a", job="j").build().total_steps == 1


def test_states_are_frozen() -> None:
    """Assigning to a state, a When or a Graph raises FrozenInstanceError."""
    g = (
        workflow("w")
        .task("a", job="j")
        .choice("c", choices=[When(lambda ctx: True, "p")], default="e")
        .parallel("p", branches=[_branch("x", "x1")])
        .end("e")
        .build()
    )
    for s in g.states:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            s.name = "other"  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            s.next = "other"  # type: ignore[misc,assignment]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        g.state("c").choices[0].next = "x"  # type: ignore[union-attr,misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        g.name = "x"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        g.states = ()  # type: ignore[misc]


def test_state_types_cannot_be_overridden() -> None:
    """The type tag of each state is fixed and not an init argument."""
    with pytest.raises(TypeError):
        TaskState(name="a", job="j", type="pass")  # type: ignore[call-arg]
    assert TaskState(name="a", job="j").type == "task"
    assert ChoiceState(name="c").type == "choice"
    assert ParallelState(name="p", branches=()).type == "parallel"
    assert PassState(name="q").type == "pass"
