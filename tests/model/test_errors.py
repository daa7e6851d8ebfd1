"""The public exception hierarchy (durable/errors.py): messages, bases and pickling."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import cloudpickle
import pytest

import durable
from durable import errors

CLASSES: list[type[errors.DurableError]] = [getattr(errors, name) for name in errors.__all__]
IDS = [c.__name__ for c in CLASSES]

PICKLERS = {
    **{f"pickle-{p}": (lambda obj, p=p: pickle.loads(pickle.dumps(obj, protocol=p))) for p in range(pickle.HIGHEST_PROTOCOL + 1)},
    "cloudpickle": lambda obj: cloudpickle.loads(cloudpickle.dumps(obj)),
    "cloudpickle-then-pickle": lambda obj: pickle.loads(cloudpickle.dumps(obj)),
}


def _make(cls: type[errors.DurableError], **extra: Any) -> errors.DurableError:
    return cls("something broke", workflow="w", instance_id="i", step="s", **extra)


def test_all_lists_every_exception_class() -> None:
    """errors.__all__ names exactly the exception classes defined in the module, all re-exported by durable."""
    defined = {
        name for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)
    for name in errors.__all__:
        assert getattr(durable, name) is getattr(errors, name)
        assert name in durable.__all__


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_class_is_a_durable_error(cls: type[errors.DurableError]) -> None:
    """Every public exception derives from DurableError (and so from Exception)."""
    assert issubclass(cls, errors.DurableError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (errors.GraphError, ValueError),
        (errors.WorkflowNotFound, LookupError),
        (errors.JobNotFound, LookupError),
        (errors.InstanceNotFound, LookupError),
        (errors.StepTimeout, TimeoutError),
        (errors.WorkflowTimeout, TimeoutError),
        (errors.SerializationError, TypeError),
        (errors.ParallelFailed, errors.StepFailed),
    ],
    ids=lambda v: v.__name__,
)
def test_builtin_bases(cls: type[errors.DurableError], base: type[BaseException]) -> None:
    """Each error also derives from the builtin exception a caller would naturally catch."""
    assert issubclass(cls, base)
    with pytest.raises(base):
        raise cls("x")


@pytest.mark.parametrize("cls", [errors.StepFailed, errors.WorkflowCancelled, errors.NoChoiceMatched,
                                 errors.NonDeterminismError, errors.StoreError], ids=lambda v: v.__name__)
def test_plain_errors_are_not_lookup_value_or_timeout(cls: type[errors.DurableError]) -> None:
    """Errors without a builtin base are not accidentally ValueError/LookupError/TimeoutError/TypeError."""
    assert not issubclass(cls, (ValueError, LookupError, TimeoutError, TypeError))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_message_names_workflow_instance_and_step(cls: type[errors.DurableError]) -> None:
    """The message includes workflow 'w', instance 'i' and step 's' when given."""
    e = _make(cls)
    text = str(e)
    assert text.startswith("something broke")
    assert "workflow 'w'" in text
    assert "instance 'i'" in text
    assert "step 's'" in text
    assert text == "something broke (workflow 'w', instance 'i', step 's')"
    assert (e.message, e.workflow, e.instance_id, e.step) == ("something broke", "w", "i", "s")
    assert e.args == (text,)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_message_without_context_is_bare(cls: type[errors.DurableError]) -> None:
    """With no workflow/instance/step the message is exactly the text given; the fields are None."""
    e = cls("plain")
    assert str(e) == "plain"
    assert e.workflow is None and e.instance_id is None and e.step is None


def test_message_with_some_context() -> None:
    """Only the fields given appear in the message, in workflow/instance/step order."""
    assert str(errors.StepFailed("m", step="s")) == "m (step 's')"
    assert str(errors.StepFailed("m", workflow="w", step="s")) == "m (workflow 'w', step 's')"
    assert str(errors.InstanceNotFound("m", instance_id="i")) == "m (instance 'i')"


def test_message_uses_repr_of_names() -> None:
    """Names are shown with repr, so quotes and odd characters stay unambiguous."""
    assert str(errors.GraphError("m", workflow="it's")) == 'm (workflow "it\'s")'


def test_extra_attributes() -> None:
    """Extra keyword arguments become attributes."""
    e = errors.StepFailed("failed", step="s", attempts=3)
    assert e.attempts == 3  # type: ignore[attr-defined]
    p = errors.ParallelFailed("branches failed", errors={"a": ValueError("x")})
    assert set(p.errors) == {"a"}  # type: ignore[attr-defined]
    s = errors.StoreError("corrupt", path="/tmp/x.lmdb")
    assert s.path == "/tmp/x.lmdb"  # type: ignore[attr-defined]


def _assert_same(before: errors.DurableError, after: errors.DurableError) -> None:
    assert type(after) is type(before)
    assert str(after) == str(before)
    assert after.args == before.args
    assert after.message == before.message
    assert after.workflow == before.workflow
    assert after.instance_id == before.instance_id
    assert after.step == before.step


@pytest.mark.parametrize("how", list(PICKLERS), ids=list(PICKLERS))
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_round_trip_keeps_type_message_and_fields(cls: type[errors.DurableError], how: str) -> None:
    """Every error survives pickle (all protocols) and cloudpickle with type, str and fields."""
    e = _make(cls, attempts=3, path="/p")
    back = PICKLERS[how](e)
    _assert_same(e, back)
    assert back.attempts == 3  # type: ignore[attr-defined]
    assert back.path == "/p"  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", list(PICKLERS), ids=list(PICKLERS))
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_round_trip_without_context(cls: type[errors.DurableError], how: str) -> None:
    """An error with no workflow/instance/step round-trips with the bare message."""
    back = PICKLERS[how](cls("bare"))
    assert type(back) is cls and str(back) == "bare"
    assert back.workflow is None and back.instance_id is None and back.step is None


@pytest.mark.parametrize("how", list(PICKLERS), ids=list(PICKLERS))
def test_step_failed_attempts_round_trip(how: str) -> None:
    """StepFailed(..., attempts=3).attempts survives a round trip."""
    e = errors.StepFailed("t failed after 3 attempt(s)", workflow="w", instance_id="i", step="t", attempts=3)
    back = PICKLERS[how](e)
    _assert_same(e, back)
    assert back.attempts == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", list(PICKLERS), ids=list(PICKLERS))
def test_parallel_failed_errors_round_trip(how: str) -> None:
    """ParallelFailed(..., errors={...}).errors survives a round trip, nested errors included."""
    e = errors.ParallelFailed(
        "2 branches failed", workflow="w", step="p", attempts=1,
        errors={"a": ValueError("x"), "b": errors.StepTimeout("slow", step="b1")},
    )
    back = PICKLERS[how](e)
    _assert_same(e, back)
    assert isinstance(back, errors.StepFailed)
    assert set(back.errors) == {"a", "b"}  # type: ignore[attr-defined]
    assert type(back.errors["a"]) is ValueError and str(back.errors["a"]) == "x"  # type: ignore[attr-defined]
    nested = back.errors["b"]  # type: ignore[attr-defined]
    assert type(nested) is errors.StepTimeout and nested.step == "b1" and str(nested) == "slow (step 'b1')"
    assert back.attempts == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", list(PICKLERS), ids=list(PICKLERS))
def test_attributes_set_after_construction_round_trip(how: str) -> None:
    """Attributes added after construction (and notes) are kept by a round trip."""
    e = errors.StoreError("disk full", workflow="w")
    e.path = "/data/store.lmdb"  # type: ignore[attr-defined]
    e.add_note("while writing checkpoint 3")
    back = PICKLERS[how](e)
    _assert_same(e, back)
    assert back.path == "/data/store.lmdb"  # type: ignore[attr-defined]
    assert back.__notes__ == ["while writing checkpoint 3"]


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_copy_and_deepcopy(cls: type[errors.DurableError]) -> None:
    """copy.copy and copy.deepcopy (which use the same reduce protocol) keep type and fields."""
    e = _make(cls, attempts=2)
    for dup in (copy.copy(e), copy.deepcopy(e)):
        _assert_same(e, dup)
        assert dup.attempts == 2  # type: ignore[attr-defined]


def test_unpickled_error_can_be_raised_and_caught_by_base() -> None:
    """A round-tripped error still behaves as its builtin base when raised."""
    back = pickle.loads(pickle.dumps(errors.JobNotFound("no job 'x'", workflow="w")))
    with pytest.raises(LookupError, match="no job 'x'"):
        raise back
