"""The ``durable`` command: each command through click's CliRunner, and as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from click.testing import CliRunner, Result

from durable import Engine, InstanceStatus, LMDBStore, StepResult, StepStatus, WorkflowInstance
from durable.cli._app import cli
from durable.cli._graph import dot_node_ids, mermaid_node_ids
from durable.cli._history import derive, format_event
from durable.cli._load import graph_of, load_module, load_target
from durable.cli._render import fmt_time, step_state

FLOWS = str(Path(__file__).with_name("cli_flows.py"))
BIN = Path(sys.executable).parent


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A store path in a fresh directory (the cwd); sys.path as it was afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    yield str(tmp_path / "t.lmdb")


# Whatever the terminal or CI sets, the tests see plain output unless they ask for a terminal.
PLAIN: dict[str, str | None] = {"TTY_INTERACTIVE": None, "TTY_COMPATIBLE": None, "FORCE_COLOR": None,
                                "NO_COLOR": None}


def invoke(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    """Run ``durable ARGS`` in this process; check its exit code."""
    result = CliRunner().invoke(cli, list(args), env={**PLAIN, **(env or {})})
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def one_error_line(result: Result) -> str:
    """The single ``durable: ...`` line a failing command printed on stderr (and no traceback)."""
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("durable: "), result.stderr
    return lines[0]


def instances(store: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(invoke("list", "--json", "--store", store).stdout)
    return out


# -- run ----------------------------------------------------------------------------


def test_run_prints_the_result_as_json_and_progress_on_stderr(store: str) -> None:
    """ARGS are JSON if they parse, else strings; the result is JSON on stdout; plain progress lines when not a tty."""
    result = invoke("run", f"{FLOWS}:checkout", "book", "2", "--store", store)
    assert json.loads(result.stdout) == {
        "reserved": {"item": "book", "qty": 2}, "payment": "paid 5", "emailed": True,
    }
    assert "reserve started" in result.stderr and "[100%] completed" in result.stderr
    [inst] = instances(store)
    assert inst["status"] == "completed" and inst["input"] == {"item": "book", "qty": 2}


def test_progress_names_the_item_of_a_map_and_the_branch_of_a_parallel(store: str) -> None:
    """Step lines of `run` (and of `events`) say which map item or parallel branch a step belongs to."""
    result = invoke("run", f"{FLOWS}:pages", "4", "--id", "p-1", "-s", store)
    assert json.loads(result.stdout) == [0, 10, 20, 30]
    for i in range(4):
        assert f"process_page [item {i}] started" in result.stderr
        assert f"process_page [item {i}] completed" in result.stderr
    assert "map started" in result.stderr and "] process_page started" not in result.stderr
    failed = invoke("run", f"{FLOWS}:pages", "4", "2", "-s", store, code=1)
    assert "process_page [item 2] failed after 1 attempt(s): ValueError: page 2 is unreadable" in failed.stderr
    parallel = invoke("run", f"{FLOWS}:checkout", "pen", "-s", store).stderr
    assert "charge [branch 0] started" in parallel and "email [branch 1] completed" in parallel
    assert "ship [branch notify] started" in invoke("run", f"{FLOWS}:order", '{"qty": 1}', "-s", store).stderr
    events = invoke("events", "p-1", "-s", store).stdout
    assert re.search(r"workflow\.step\.started\s+map#0/3/process_page#0 \[item 3\]$", events, re.M), events


def test_step_labels_from_keys() -> None:
    """A key alternates scope and label; the kinds of the scopes, when known, decide item or branch."""
    from durable.cli._render import step_label, step_where

    assert step_where("reserve#0") == "" and step_label("reserve", "reserve#0") == "reserve"
    assert step_label("process_page", "map#0/3/process_page#0") == "process_page [item 3]"
    assert step_where("parallel#0/1/email#0") == "branch 1"
    assert step_where("fulfil#0/notify/ship#0") == "branch notify"
    nested = "parallel#0/1/map#0/7/process_page#0"
    assert step_where(nested) == "branch 1, item 7"
    # A builder map state has its own name; a parallel may have branches labelled like numbers.
    assert step_where("pages#0/2/read#0", {"pages#0": "map"}) == "item 2"
    assert step_where("split#0/0/read#0", {"split#0": "parallel"}) == "branch 0"


def test_progress_learns_the_kind_of_a_scope_from_its_started_event() -> None:
    """A builder parallel with branches named like numbers: its step_type, not the label, says branch."""
    import io

    from rich.console import Console

    from durable.cli._progress import RunProgress
    from durable._engine.events import Event, EventName

    out = io.StringIO()
    progress = RunProgress(Console(file=out, width=200), "plain", "wf")
    progress.started("i1")

    def step(name: EventName, step_name: str, key: str, step_type: str = "task", **more: Any) -> None:
        progress.on_event(Event(name=name, instance_id="i1", workflow_name="wf", step_name=step_name,
                                step_key=key, step_type=step_type, **more))

    step("workflow.step.started", "split", "split#0", "parallel")
    step("workflow.step.started", "read", "split#0/0/read#0")
    step("workflow.step.completed", "read", "split#0/0/read#0")
    progress.on_event(Event(name="workflow.progress", instance_id="i1", workflow_name="wf", progress=50,
                            current_step="read"))
    step("workflow.step.retry", "read", "split#0/1/read#0", attempt=1, max_attempts=3, delay=0.5, error="E: x")
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["[  0%] split started", "[  0%] read [branch 0] started", "[ 50%] read [branch 0] completed",
                         "[ 50%] read [branch 1] attempt 1/3 failed, retrying in 0.5 s: E: x"]


def test_run_input_json_and_keyword_arguments(store: str) -> None:
    """--input: a list is positional arguments, an object keyword arguments, of a @workflow function."""
    out = invoke("run", f"{FLOWS}:checkout", "--input", '["pen", 3]', "-s", store, "-q").stdout
    assert json.loads(out)["reserved"] == {"item": "pen", "qty": 3}
    out = invoke("run", f"{FLOWS}:checkout", "--input", '{"item": "ink", "qty": 4}', "-s", store, "-q").stdout
    assert json.loads(out)["reserved"] == {"item": "ink", "qty": 4}


def test_run_a_builder_workflow_with_its_jobs(store: str) -> None:
    """A builder workflow takes one input; jobs come from register_jobs() and from functions named like them."""
    result = invoke("run", f"{FLOWS}:order", '{"qty": 2}', "--store", store, "--quiet")
    assert json.loads(result.stdout) == {"total": 6, "ok": True}
    assert result.stderr == ""
    # Named by its registered name rather than the module attribute:
    assert json.loads(invoke("run", f"{FLOWS}:order", "--input", '{"qty": 1}', "-s", store, "-q").stdout)["total"] == 3


def test_a_failed_instance_exits_1_with_its_error(store: str) -> None:
    result = invoke("run", f"{FLOWS}:checkout", "book", "20", "--store", store, code=1)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("durable: instance ") and "failed: OutOfStock: only 10 book left" in line
    assert "attempt 1/2 failed, retrying" in result.stderr
    assert result.stdout == ""


def test_run_with_an_id_runs_once(store: str) -> None:
    """Running again with the same --id prints the stored result without running anything."""
    first = invoke("run", f"{FLOWS}:checkout", "cup", "--id", "order-1", "-s", store)
    again = invoke("run", f"{FLOWS}:checkout", "cup", "--id", "order-1", "-s", store)
    assert first.stdout == again.stdout and "already exists" in again.stderr
    assert "reserve started" not in again.stderr
    assert [i["id"] for i in instances(store)] == ["order-1"]


def test_the_progress_bar_in_a_terminal(store: str) -> None:
    result = invoke("run", f"{FLOWS}:checkout", "book", "-s", store,
                    env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"})
    assert "━" in result.stderr and "100%" in result.stderr
    assert "reserve started" not in result.stderr  # no plain lines under the bar
    assert json.loads(result.stdout)["emailed"] is True


# -- detach, resume, cancel -------------------------------------------------------------


def test_detach_then_resume(store: str) -> None:
    """--detach queues an instance; `resume MODULE` runs it; without modules it says what is left."""
    iid = invoke("run", f"{FLOWS}:slow", "0.01", "2", "--detach", "-s", store).stdout.strip()
    [inst] = instances(store)
    assert inst["id"] == iid and inst["status"] == "pending" and inst["queue"] == "default"  # queued, nothing ran
    shown = json.loads(invoke("show", iid, "--json", "-s", store).stdout)
    assert shown["steps"] == [] and shown["waiting"] == "waiting for a worker of queue default"
    assert "waiting for a worker of queue default" in invoke("show", iid, "-s", store).stdout  # nobody serves it
    line = one_error_line(invoke("resume", "-s", store, code=1))
    assert "1 unfinished instance(s), of slow" in line
    result = invoke("resume", FLOWS, "-s", store)
    assert f"resumed {iid}" in result.stdout and f"{iid} (slow): completed" in result.stdout
    assert invoke("resume", FLOWS, "-s", store).stdout.strip() == "nothing to resume"
    assert invoke("resume", "-s", store).stdout.strip() == "nothing to resume"


def test_run_with_the_id_of_an_abandoned_instance_continues_it(store: str) -> None:
    """`run --id` of an unfinished instance nobody runs continues it (start() takes it over)."""
    iid = invoke("run", f"{FLOWS}:slow", "0.01", "2", "--detach", "-s", store).stdout.strip()
    again = invoke("run", f"{FLOWS}:slow", "0.01", "2", "--id", iid, "-s", store)
    assert json.loads(again.stdout) is not None
    assert instances(store)[0]["status"] == "completed"
    assert invoke("resume", FLOWS, "-s", store).stdout.strip() == "nothing to resume"


def test_resume_reports_failures(store: str) -> None:
    iid = invoke("run", f"{FLOWS}:checkout", "ink", "11", "--detach", "-s", store).stdout.strip()
    result = invoke("resume", FLOWS, "-s", store, code=1)
    assert f"{iid} (checkout): failed" in result.stdout
    assert "1 of 1 resumed instance(s) did not complete" in one_error_line(result)


def test_signal_then_a_worker_delivers_it(store: str) -> None:
    """`durable signal` queues a signal durably; the resumed instance takes it."""
    iid = invoke("run", f"{FLOWS}:needs_approval", "ink", "--detach", "-s", store).stdout.strip()
    out = invoke("signal", iid[:8], "approve", "--data", '{"by": "ann"}', "-s", store).stdout
    assert f"sent approve to {iid}" in out
    result = invoke("resume", FLOWS, "-s", store)
    assert f"{iid} (needs_approval): completed" in result.stdout
    shown = json.loads(invoke("show", iid, "--json", "-s", store).stdout)
    assert shown["output"] == {"item": "ink", "approval": {"by": "ann"}}
    assert "not valid JSON" in one_error_line(invoke("signal", iid, "approve", "--data", "{bad", "-s", store, code=2))
    assert "already finished" in one_error_line(invoke("signal", iid, "approve", "-s", store, code=1))


def test_cancel(store: str) -> None:
    iid = invoke("run", f"{FLOWS}:slow", "--detach", "-s", store).stdout.strip()
    assert invoke("cancel", iid[:8], "-s", store).stdout.strip() == f"cancelled {iid}"
    assert instances(store)[0]["status"] == "cancelled"
    assert "has already finished (cancelled)" in one_error_line(invoke("cancel", iid, "-s", store, code=1))
    assert "no instance 'nope'" in one_error_line(invoke("cancel", "nope", "-s", store, code=1))


# -- list, show, events, graph ------------------------------------------------------------


def test_list_filters_and_formats(store: str) -> None:
    invoke("run", f"{FLOWS}:checkout", "a", "-s", store, "-q")
    invoke("run", f"{FLOWS}:checkout", "b", "20", "-s", store, "-q", code=1)
    invoke("run", f"{FLOWS}:order", '{"qty": 1}', "-s", store, "-q")
    every = instances(store)
    assert [i["workflow"] for i in every] == ["order", "checkout", "checkout"]  # most recent first
    assert [i["status"] for i in every] == ["completed", "failed", "completed"]
    only = json.loads(invoke("list", "--workflow", "checkout", "--status", "failed", "--json", "-s", store).stdout)
    assert [i["id"] for i in only] == [every[1]["id"]]
    assert len(json.loads(invoke("list", "-n", "2", "--json", "-s", store).stdout)) == 2
    table = invoke("list", "-s", store).stdout
    assert all(i["id"] in table for i in every) and "OutOfStock: only 10 b left" in table
    assert invoke("list", "--status", "running", "-s", store).stdout.strip() == "no instances"
    assert json.loads(invoke("list", "--json", env={"DURABLE_STORE": store}).stdout) == every


def _run_by(store: str) -> dict[str, str]:
    """Instance id -> its RUN BY cell in `durable list` (the column between DURATION and STEP)."""
    lines = invoke("list", "-s", store).stdout.splitlines()
    header = lines[0]
    start, end = header.index("RUN BY"), header.index("STEP")
    return {line.split()[0]: line[start:end].strip() for line in lines[2:]}


def test_list_and_show_say_who_runs_an_unfinished_instance(tmp_path: Path, store: str) -> None:
    """A live lease holder is named (pid, host); a crashed instance has no live process; a detached one waits
    for a worker of its queue."""
    detached = invoke("run", f"{FLOWS}:slow", "--detach", "-s", store).stdout.strip()
    invoke("run", f"{FLOWS}:checkout", "pen", "-s", store, "-q")
    run = subprocess.Popen([str(BIN / "durable"), "run", f"{FLOWS}:slow", "0.3", "100", "--id", "live-1", "-s", store,
                            "-q"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(store, "live-1", "running")
        host = socket.gethostname()
        cells = _run_by(store)
        assert cells["live-1"] == f"process {run.pid} on {host}"
        assert cells[detached] == "waiting for a worker of queue default"
        assert len(cells) == 3 and [c for i, c in cells.items() if i not in ("live-1", detached)] == [""]
        listed = {i["id"]: i for i in instances(store)}
        assert listed["live-1"]["run_by"] == {"host": host, "pid": run.pid}
        assert listed[detached]["run_by"] is None and "run_by" not in [i for i in listed.values()
                                                                       if i["status"] == "completed"][0]
        assert f"process {run.pid} on {host}" in invoke("show", "live-1", "-s", store).stdout
        run.kill()  # a crash: its lease stays in the store, naming a dead process
        run.communicate(timeout=30)
    finally:
        run.kill()
    assert _run_by(store)["live-1"] == "no live process"
    assert instances(store)[0]["status"] == "running" and instances(store)[0]["run_by"] is None
    assert "no live process" in invoke("show", "live-1", "-s", store).stdout
    assert "RUN BY" not in invoke("list", "--status", "completed", "-s", store).stdout


def test_show(store: str) -> None:
    invoke("run", f"{FLOWS}:checkout", "book", "20", "-s", store, "-q", code=1)
    iid = instances(store)[0]["id"]
    text = invoke("show", iid[:6], "-s", store).stdout
    assert iid in text and "failed" in text and "reserve#0" in text
    assert re.search(r"reserve#0\s+task\s+failed\s+2\s", text)  # step, type, status, attempts
    data = json.loads(invoke("show", iid, "--json", "-s", store).stdout)
    assert data["status"] == "failed" and data["error"] == "OutOfStock: only 10 book left"
    [step] = data["steps"]
    assert (step["key"], step["status"], step["attempts"]) == ("reserve#0", "failed", 2)


def test_show_and_events_cut_long_values_unless_full(store: str) -> None:
    """Inputs, outputs and errors over 200 characters end in an ellipsis and their length; --full prints them whole."""
    item = "x" * 500
    invoke("run", f"{FLOWS}:checkout", item, "--id", "long-ok", "-s", store, "-q")
    invoke("run", f"{FLOWS}:checkout", item, "20", "--id", "long-bad", "-s", store, "-q", code=1)
    error = f"OutOfStock: only 10 {item} left"
    for iid in ("long-ok", "long-bad"):
        for command in ("show", "events"):
            text = invoke(command, iid, "-s", store).stdout
            assert item not in text and "x" * 150 in text, (command, iid)
            assert re.search(r"x… \([\d,]+ characters; --full shows all\)", text), (command, iid)
            assert all(len(line) < 600 for line in text.splitlines()), (command, iid)
            whole = invoke(command, iid, "--full", "-s", store).stdout
            assert item in whole and "--full shows all" not in whole, (command, iid)
            assert item in invoke(command, iid, "--json", "-s", store).stdout  # JSON is never cut
    shown = invoke("show", "long-bad", "-s", store).stdout
    assert f"({len(error):,} characters; --full shows all)" in shown  # the error row and the step's error
    assert f"({len(json.dumps({'item': item, 'qty': 20})):,} characters" in shown  # the input, as JSON
    assert error in invoke("show", "long-bad", "--full", "-s", store).stdout
    assert f"error={error}" in invoke("events", "long-bad", "--full", "-s", store).stdout
    invoke("run", f"{FLOWS}:checkout", "pen", "--id", "short", "-s", store, "-q")  # nothing to cut
    assert "--full shows all" not in invoke("show", "short", "-s", store).stdout
    assert "--full shows all" not in invoke("events", "short", "-s", store).stdout


def test_show_graph_marks_each_states_status(store: str) -> None:
    invoke("run", f"{FLOWS}:order", '{"qty": 1}', "-s", store, "-q")
    iid = instances(store)[0]["id"]
    mermaid = invoke("show", iid, "--graph", "--module", FLOWS, "-s", store).stdout
    assert mermaid.startswith("flowchart TD")
    assert "classDef completed" in mermaid and "class n0,n1,n4,n2,start,stop completed" in mermaid
    dot = invoke("show", iid, "--graph", "--format", "dot", "-m", FLOWS, "-s", store).stdout
    assert dot.startswith('digraph "order"') and 'n0 [style=filled, fillcolor="#d1fae5"' in dot
    assert "--module" in one_error_line(invoke("show", iid, "--graph", "-s", store, code=2))


def test_diagram_node_ids_follow_the_renderer() -> None:
    """The ids the status marks use are those the Mermaid and DOT renderers give each state."""
    for target in (f"{FLOWS}:order", f"{FLOWS}:checkout"):
        graph = graph_of(load_target(target)[1])
        mermaid, dot = graph.to_mermaid(), graph.to_dot()
        for state, node in mermaid_node_ids(graph):
            assert re.search(rf"^\s*(subgraph )?{node}\b.*{re.escape(state.name)}", mermaid, re.M), (state, node)
        for state, node in dot_node_ids(graph):
            assert re.search(rf"^\s*(subgraph cluster_)?{node}\b.*{re.escape(state.name)}", dot, re.M) or (
                state.type == "parallel" and f"{node} [shape=point]" in dot), (state, node)


def test_events_are_derived_from_checkpoints(store: str) -> None:
    invoke("run", f"{FLOWS}:checkout", "book", "-s", store, "-q")
    iid = instances(store)[0]["id"]
    lines = invoke("events", iid, "-s", store).stdout.splitlines()
    names = [line.split()[2] for line in lines]
    assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
    assert names.count("workflow.step.started") == 4 and names.count("workflow.step.completed") == 4
    records = [json.loads(line) for line in invoke("events", iid, "--json", "-f", "-s", store).stdout.splitlines()]
    assert [r["name"] for r in records] == names
    assert records[1]["step_key"] == "reserve#0" and records[2]["attempts"] == 1


def test_history_of_a_retrying_step_and_of_each_end() -> None:
    """A step waiting out a retry is a step.retry event; timed_out reads as workflow.failed, cancelled as cancelled."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    waiting = StepResult("charge", StepStatus.RUNNING, started_at=t0 + timedelta(seconds=1), attempts=2,
                         key="charge#0", error="ConnectionError: busy", next_attempt_at=t0 + timedelta(seconds=3))
    inst = WorkflowInstance("i1", "wf", InstanceStatus.RUNNING, started_at=t0)
    events = derive(inst, {"charge#0": waiting})
    assert [e.event.name for e in events] == ["workflow.started", "workflow.step.started", "workflow.step.retry"]
    assert events[2].event.attempt == 2 and events[2].key == "charge#0"
    assert "charge#0" in format_event(events[2]) and "error=ConnectionError: busy" in format_event(events[2])
    for status, name in (("timed_out", "workflow.failed"), ("cancelled", "workflow.cancelled")):
        ended = attrs.evolve(inst, status=InstanceStatus(status), completed_at=t0 + timedelta(seconds=9), error="x")
        assert derive(ended, {})[-1].event.name == name


def test_history_of_waits_has_no_retry_and_step_events_carry_step_key() -> None:
    """A running signal wait or sleep has a next_attempt_at (its deadline / wake-up time): no retry event for it."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    later = t0 + timedelta(hours=1)
    inst = WorkflowInstance("i1", "wf", InstanceStatus.RUNNING, started_at=t0)
    steps = {
        "signal:approve#0": StepResult("signal:approve", StepStatus.RUNNING, started_at=t0, attempts=1,
                                       key="signal:approve#0", step_type="signal", next_attempt_at=later),
        "sleep#0": StepResult("sleep", StepStatus.RUNNING, started_at=t0, attempts=1, key="sleep#0",
                              step_type="sleep", next_attempt_at=later),
        "ask#0": StepResult("ask", StepStatus.COMPLETED, started_at=t0, completed_at=t0, attempts=1, key="ask#0"),
    }
    events = derive(inst, steps)
    assert "workflow.step.retry" not in [e.event.name for e in events]
    step_events = [e for e in events if e.event.step_name is not None]
    assert len(step_events) == 4
    assert all(e.event.step_key == e.key and e.key in steps for e in step_events)
    assert all(e.to_dict()["step_key"] == e.key for e in step_events)


async def _leave_waiting(store: str) -> tuple[str, str]:
    """Start needs_approval and napper, run them until they wait (suspended), then exit: both stay unfinished."""
    flows = load_module(FLOWS)
    async with Engine.open(store) as engine:
        engine.workflows.register(flows.needs_approval)
        engine.workflows.register(flows.napper)
        waiting = await engine.workflows.start(flows.needs_approval, "ink", id="waits-for-approval")
        napping = await engine.workflows.start(flows.napper, id="sleeps")
        for iid in (waiting, napping):
            while iid not in engine.workflows.suspended_ids():
                await trio.sleep(0.005)
    return waiting, napping


def test_a_signal_wait_and_a_sleep_show_as_waiting(store: str) -> None:
    """show: `waiting until <deadline / wake-up time>`, not `retrying`; events: no retry at the wait's time-out."""
    waiting, napping = trio.run(_leave_waiting, store)
    for iid, key in ((waiting, "signal:approve#0"), (napping, "sleep#0")):
        text = invoke("show", iid, "-s", store).stdout
        assert "retrying" not in text
        step = json.loads(invoke("show", iid, "--json", "-s", store).stdout)["steps"][0]
        assert (step["key"], step["status"], step["state"]) == (key, "running", "waiting")
        until = datetime.fromisoformat(step["next_attempt_at"])
        assert timedelta(minutes=59) < until - datetime.fromisoformat(step["started_at"]) <= timedelta(hours=1)
        assert re.search(rf"{re.escape(key)}\s+\w+\s+waiting until {re.escape(fmt_time(until))}\s", text), text
        records = [json.loads(line) for line in invoke("events", iid, "--json", "-s", store).stdout.splitlines()]
        assert [r["name"] for r in records] == ["workflow.started", "workflow.step.started"]
        assert records[1]["step_key"] == key
        assert "retry" not in invoke("events", iid, "-s", store).stdout


def test_graph_prints_mermaid_and_dot() -> None:
    mermaid = invoke("graph", f"{FLOWS}:checkout").stdout
    assert mermaid.startswith("flowchart TD") and '["reserve"]' in mermaid
    dot = invoke("graph", f"{FLOWS}:order", "--format", "dot").stdout
    assert dot.startswith('digraph "order"') and "ship-order" in dot
    assert "several workflows" in one_error_line(invoke("graph", FLOWS, code=1))


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message", "code"), [
    (["run", "no_such_module_here:x"], "no module named 'no_such_module_here'", 1),
    (["run", "missing.py:x"], "no such file: missing.py", 1),
    (["run", f"{FLOWS}:helper"], "is not a workflow but a function", 1),
    (["run", f"{FLOWS}:reserve"], "is not a workflow but a @step function", 1),
    (["run", f"{FLOWS}:unbuilt"], "a workflow builder that was not built", 1),
    (["run", f"{FLOWS}:nothing"], "has no workflow 'nothing' (its workflows: checkout, slow, needs_approval, napper, gated, pages, order)",
     1),
    (["graph", f"{FLOWS}:OutOfStock"], "is not a workflow but a class (OutOfStock)", 1),
    (["run", f"{FLOWS}:checkout", "--input", "{oops"], "--input is not valid JSON", 2),
    (["run", f"{FLOWS}:checkout", "--input", "7"], "must be a JSON list", 2),
    (["run", f"{FLOWS}:checkout", "x", "--input", "[]"], "either as ARGS or with --input", 2),
    (["run", f"{FLOWS}:order", "1", "2"], "builder workflow: it takes one input value", 2),
    (["run", f"{FLOWS}:checkout", "1", "2", "3"], "too many positional arguments", 2),
    (["run", f"{FLOWS}:checkout", "{bad", "1"], "ARG 1 is not valid JSON", 2),
    (["list"], "no durable store at durable.lmdb", 1),
    (["show", "x", "-s", "nowhere"], "no durable store at nowhere", 1),
    (["events", "x", "-s", "nowhere"], "no durable store at nowhere", 1),
    (["cancel", "x", "-s", "nowhere"], "no durable store at nowhere", 1),
    (["resume", FLOWS, "-s", "nowhere"], "no durable store at nowhere", 1),
    (["list", "-s", FLOWS], "is a file, not a durable store directory", 1),
    (["run", f"{FLOWS}:checkout", "x", "--id", "a" * 201], "is not a usable id", 2),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(store: str, args: list[str], message: str, code: int) -> None:
    line = one_error_line(invoke(*args, code=code))
    assert message in line
    assert not os.path.exists("nowhere") and not os.path.exists("durable.lmdb")  # read commands create nothing


def test_an_empty_directory_is_not_a_store(store: str) -> None:
    os.mkdir(store)
    assert "is not a durable store" in one_error_line(invoke("list", "-s", store, code=1))
    assert os.listdir(store) == []


def test_a_module_that_fails_to_import(store: str, tmp_path: Path) -> None:
    (tmp_path / "broken_flows.py").write_text("raise RuntimeError('boom')\n")
    line = one_error_line(invoke("run", "broken_flows.py:x", code=1))
    assert "error importing broken_flows.py: RuntimeError: boom" in line
    assert "error importing broken_flows: RuntimeError: boom" in one_error_line(invoke("graph", "broken_flows", code=1))


def test_debug_shows_the_traceback(store: str) -> None:
    result = CliRunner().invoke(cli, ["--debug", "list", "-s", FLOWS])
    assert result.exit_code == 1 and result.exception is not None


def test_without_the_cli_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from durable.cli import main

    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(SystemExit) as exc:
        main(["list"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "durable: the command line needs the 'cli' extra: pip install 'durable[cli]'\n"


# -- as real processes ------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in PLAIN}


def _durable(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "durable"), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=_env())


def _wait_for(path: str, instance_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [i for i in instances(path) if i["id"] == instance_id] if os.path.exists(path) else []
        if found and found[0]["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} not {status} after {timeout} s: {instances(path)}")


def test_processes_run_list_and_python_m(tmp_path: Path) -> None:
    """The console script and `python -m durable`; a bad input as a process: one line, no traceback."""
    done = _durable("run", f"{FLOWS}:checkout", "book", "3", "--store", "p.lmdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reserved"] == {"item": "book", "qty": 3}
    listed = subprocess.run([sys.executable, "-m", "durable", "list", "--json", "-s", "p.lmdb"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=_env())
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["status"] == "completed"
    bad = _durable("run", "nosuchmodule:wf", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "durable: no module named 'nosuchmodule' (nor a file of that name)\n"


def test_processes_cancel_signal_resume_show_and_graph(tmp_path: Path) -> None:
    """The commands that change or draw things, as real processes, with their output checked."""
    def ok(*args: str) -> str:
        done = _durable(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    slow = ok("run", f"{FLOWS}:slow", "--detach", "-s", "p.lmdb").strip()
    assert ok("cancel", slow, "-s", "p.lmdb").strip() == f"cancelled {slow}"
    waiting = ok("run", f"{FLOWS}:needs_approval", "ink", "--detach", "-s", "p.lmdb").strip()
    assert f"sent approve to {waiting}" in ok("signal", waiting, "approve", "--data", '"yes"', "-s", "p.lmdb")
    resumed = ok("resume", FLOWS, "-s", "p.lmdb")
    assert f"{waiting} (needs_approval): completed" in resumed and slow not in resumed
    shown = json.loads(ok("show", waiting, "--json", "-s", "p.lmdb"))
    assert shown["status"] == "completed" and shown["output"] == {"item": "ink", "approval": "yes"}
    assert ok("graph", f"{FLOWS}:checkout").startswith("flowchart TD")
    assert ok("graph", f"{FLOWS}:checkout", "--format", "dot").startswith("digraph")
    ok("run", f"{FLOWS}:order", '{"qty": 1}', "-s", "p.lmdb", "-q")
    order = json.loads(ok("list", "--workflow", "order", "--json", "-s", "p.lmdb"))[0]["id"]
    marked = ok("show", order, "--graph", "--module", FLOWS, "-s", "p.lmdb")
    assert marked.startswith("flowchart TD") and "classDef completed" in marked


def test_stored_values_of_a_module_need_it_importable(tmp_path: Path, store: str) -> None:
    """A step's stored exception pickles its class by reference: reading it elsewhere needs --module."""
    invoke("run", f"{FLOWS}:checkout", "book", "20", "--id", "o-1", "-s", store, "-q", code=1)
    elsewhere = _durable("show", "o-1", "-s", store, cwd=tmp_path)
    assert elsewhere.returncode == 1 and "No module named 'cli_flows'" in elsewhere.stderr
    assert "--module" in elsewhere.stderr and len(elsewhere.stderr.splitlines()) == 1
    shown = _durable("show", "o-1", "-s", store, "--module", FLOWS, cwd=tmp_path)
    assert shown.returncode == 0 and "OutOfStock: only 10 book left" in shown.stdout


def test_worker_runs_a_detached_instance_and_stops_on_sigterm(tmp_path: Path, store: str) -> None:
    """A worker takes over a detached instance; `events --follow` in another process sees it end."""
    iid = invoke("run", f"{FLOWS}:slow", "0.2", "3", "--detach", "-s", store).stdout.strip()
    worker = subprocess.Popen([str(BIN / "durable"), "worker", FLOWS, "-s", store, "--poll", "0.05"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        follow = _durable("events", iid, "--follow", "-s", store, cwd=tmp_path)
        assert follow.returncode == 0, follow.stderr
        names = [line.split()[2] for line in follow.stdout.splitlines()]
        assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
        assert names.count("workflow.step.completed") == 3
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert f"running {iid} (slow)" in out and f"completed {iid} (slow)" in out
    assert "stopping on SIGTERM" in out and out.rstrip().endswith("stopped")
    with_store = LMDBStore(store)  # closed cleanly: opens again
    try:
        inst = trio.run(with_store.get_instance, iid)
        assert inst is not None and inst.status == InstanceStatus.COMPLETED and inst.output == 3
    finally:
        with_store.close()


def test_worker_concurrency_caps_the_instances_in_flight(tmp_path: Path, store: str) -> None:
    """--concurrency 2: six instances whose step blocks, at most two run at once; --limit alone never capped that."""
    gate = tmp_path / "gate"
    gate.mkdir()
    ids = [invoke("run", f"{FLOWS}:gated", str(gate), "--detach", "-s", store).stdout.strip() for _ in range(6)]
    worker = subprocess.Popen([str(BIN / "durable"), "worker", FLOWS, "-s", store, "--poll", "0.02", "--limit", "5",
                               "--concurrency", "2"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    started = gate / "started"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker.poll() is None and not (
                started.exists() and len(started.read_text().splitlines()) >= 2):
            time.sleep(0.02)
        time.sleep(0.5)  # 25 more looks: none may take a third instance while two hold
        assert worker.poll() is None, worker.communicate()
        assert len(started.read_text().splitlines()) == 2
        assert (gate / "most").read_text() == "2"
        (gate / "open").touch()
        for iid in ids:
            _wait_for(store, iid, "completed")
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "at most 2 instance(s) at once" in out and out.count("running ") == 6
    assert len(started.read_text().splitlines()) == 6 and (gate / "most").read_text() == "2"
    assert max(i["output"] for i in instances(store)) == 2  # each hold() returned the most at once it saw


def test_cancel_a_running_instance_its_step_shows_interrupted(tmp_path: Path, store: str) -> None:
    """The step cut off by a cancel shows `interrupted`, not `running`; the cancel reads `was cancelled`, once."""
    run = subprocess.Popen([str(BIN / "durable"), "run", f"{FLOWS}:slow", "0.3", "100", "--id", "c-1", "-s", store],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(store, "c-1", "running")
        while not json.loads(invoke("show", "c-1", "--json", "-s", store).stdout)["steps"]:
            time.sleep(0.02)
        assert invoke("cancel", "c-1", "-s", store).stdout.startswith("cancelled c-1 (process ")
        out, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 1 and out == ""
    assert err.strip().splitlines()[-1] == "durable: instance c-1 was cancelled"
    data = json.loads(invoke("show", "c-1", "--json", "-s", store).stdout)
    assert data["status"] == "cancelled" and data["error"].startswith("cancelled")  # the stored record, as it is
    last = data["steps"][-1]
    assert (last["status"], last["state"]) == ("running", "interrupted")
    assert {s["state"] for s in data["steps"][:-1]} <= {"completed"}
    text = invoke("show", "c-1", "-s", store).stdout
    assert re.search(rf"{re.escape(last['key'])}\s+task\s+interrupted\s", text), text
    assert not re.search(r"\brunning\b", text) and "cancelled (workflow" not in text
    assert re.search(r"^status\s+cancelled\s*$", text, re.M)
    listed = invoke("list", "-s", store).stdout.splitlines()[2]
    assert listed.split()[2] == "cancelled" and "cancelled (workflow" not in listed


def test_how_an_ended_instance_reads() -> None:
    """A cancel's recorded error only repeats the status: shown once; any other error is shown as it is."""
    from durable.cli._render import error_detail

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    cancelled = WorkflowInstance("i1", "wf", InstanceStatus.CANCELLED, started_at=t0, completed_at=t0,
                                 error="cancelled (workflow 'wf', instance 'i1')", error_type="WorkflowCancelled")
    assert error_detail(cancelled) is None
    failed = attrs.evolve(cancelled, status=InstanceStatus.FAILED, error="OutOfStock: only 10 ink left")
    assert error_detail(failed) == "OutOfStock: only 10 ink left"
    other = attrs.evolve(cancelled, error="cancelled (workflow 'wf', instance 'i2')")  # not this instance's names
    assert error_detail(other) == other.error
    running = StepResult("charge", StepStatus.RUNNING, started_at=t0, attempts=1, key="charge#0")
    assert step_state(running, finished=True) == ("interrupted", None)
    assert step_state(running, finished=False) == ("running", None)


def test_an_interrupted_run_is_finished_by_a_worker(tmp_path: Path, store: str) -> None:
    """Ctrl-C on `durable run` leaves its instance unfinished (exit 130); a worker takes it over and finishes it."""
    run = subprocess.Popen([str(BIN / "durable"), "run", f"{FLOWS}:slow", "0.3", "4", "--id", "slow-1", "-s", store],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(store, "slow-1", "running")
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 130 and out == ""
    assert err.strip().splitlines()[-1].startswith("durable: interrupted by SIGINT: the instance is left unfinished")
    assert instances(store)[0]["status"] == "running"
    worker = subprocess.Popen([str(BIN / "durable"), "worker", FLOWS, "-s", store, "--poll", "0.05"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(store, "slow-1", "completed")
        worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "completed slow-1 (slow)" in out and "stopping on SIGINT" in out
