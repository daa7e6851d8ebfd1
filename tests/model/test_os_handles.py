"""Open files, streams and sockets are never stored: a SerializationError naming the step and the type,
not a pickle that comes back as something else (an open text file used to come back as a StringIO)."""

from __future__ import annotations

import io
import pickle
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import Engine, SerializationError, Store, step, workflow
from durable._model import pickling, serde
from durable._model.serde import encode_instance, encode_step, encode_value
from support import make_instance, make_step


@pytest.fixture
def text_file(tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "data.txt"
    path.write_text("hello")
    with open(path) as f:
        yield f


class Raw(io.RawIOBase):
    """An io.IOBase subclass of Python's own, whose state alone would pickle."""

    def __init__(self) -> None:
        self.data = bytearray(b"abc")


class Holder:
    def __init__(self, thing: Any) -> None:
        self.thing = thing


def handles(tmp_path: Path) -> list[tuple[Any, str]]:
    path = tmp_path / "h.bin"
    path.write_bytes(b"x")
    return [
        (io.StringIO("text"), "_io.StringIO"),
        (io.BytesIO(b"bytes"), "_io.BytesIO"),
        (open(path), "_io.TextIOWrapper"),
        (open(path, "rb"), "_io.BufferedReader"),
        (open(path, "rb", buffering=0), "_io.FileIO"),
        (socket.socket(), "socket.socket"),
        (Raw(), f"{__name__}.Raw"),
    ]


def close(value: Any) -> None:
    close_it = getattr(value, "close", None)
    if close_it is not None:
        close_it()


def test_every_handle_is_refused_by_the_codec_naming_its_type(tmp_path: Path) -> None:
    for value, type_name in handles(tmp_path):
        try:
            for wrapped in (value, [1, {"nested": value}], Holder(value), lambda: value):
                with pytest.raises(SerializationError) as caught:
                    encode_step(make_step("save#0", name="save", output=wrapped), instance_id="i-1")
                text = str(caught.value)
                assert "step 'save#0'" in text and type_name in text and "open file, stream or socket" in text
                assert caught.value.step == "save#0" and caught.value.instance_id == "i-1"
            with pytest.raises(SerializationError, match=type_name):
                encode_instance(make_instance("i-2", input={"f": value}))
            with pytest.raises(SerializationError, match=type_name):
                encode_value(value, "the payload of signal 'go'")
        finally:
            close(value)


def test_plain_values_pickle_as_before() -> None:
    """The refusing pickler writes the bytes pickle.dumps writes, call after call, refused calls in between."""
    values: list[Any] = [("step", "x", 1, 2.5, None, [1, {"a": (True,)}]), {"k": b"v"}, Holder(3), list(range(50))]
    for value in values:
        assert pickling.pickle_value(value) == pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with pytest.raises(TypeError):
            pickling.pickle_value([value, io.StringIO()])
        assert pickling.pickle_value(value) == pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def test_each_thread_pickles_on_its_own() -> None:
    results: list[bool] = []

    def work(n: int) -> None:
        ok = all(pickling.pickle_value([n, i, "x" * n]) == pickle.dumps([n, i, "x" * n], protocol=pickle.HIGHEST_PROTOCOL)
                 for i in range(2000))
        results.append(ok)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4


# -- through the engine -----------------------------------------------------------------

OPENED: dict[str, Any] = {}


@step
async def open_it(path: str) -> Any:
    f = open(path)
    OPENED["file"] = f
    return f


@step
async def read_it(f: Any) -> str:
    text: str = f.read()
    return text


@workflow
async def returns_a_file(path: str) -> str:
    f = await open_it(path)
    return str(type(f))


@workflow
async def passes_a_file(path: str) -> str:
    with open(path) as f:
        return await read_it(f)


@workflow
async def takes_anything(x: Any) -> str:
    return str(type(x))


@workflow
async def waits_for_go() -> Any:
    return await durable.wait_for_signal("go")


async def test_a_step_returning_an_open_file_fails_naming_the_step(engine: Engine, tmp_path: Path) -> None:
    """Before, the step completed and replay would hand back "<class '_io.StringIO'>"."""
    path = tmp_path / "in.txt"
    path.write_text("hello")
    try:
        inst = await engine.workflows.wait(await engine.workflows.start(returns_a_file, str(path), id="f-1"))
    finally:
        OPENED.pop("file").close()
    assert inst.status == "failed" and inst.error_type == "SerializationError"
    error = inst.error or ""
    assert "step 'open_it#0'" in error and "_io.TextIOWrapper" in error and "instance 'f-1'" in error
    assert (await engine.store.get_steps("f-1"))["open_it#0"].status != "completed"


async def test_a_step_given_an_open_file_fails_before_it_runs(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("hello")
    inst = await engine.workflows.wait(await engine.workflows.start(passes_a_file, str(path)))
    assert inst.status == "failed" and inst.error_type == "SerializationError"
    assert "step 'read_it#0'" in (inst.error or "") and "_io.TextIOWrapper" in (inst.error or "")


async def test_start_and_signal_refuse_handles(store: Store) -> None:
    async with Engine(store=store) as engine:
        with pytest.raises(SerializationError) as caught:
            await engine.workflows.start(takes_anything, io.StringIO("x"), id="s-1")
        assert caught.value.workflow == "takes_anything" and caught.value.instance_id == "s-1"
        assert "_io.StringIO" in str(caught.value)
        assert await store.get_instance("s-1") is None
        iid = await engine.workflows.start(waits_for_go, id="s-2")
        sock = socket.socket()
        try:
            with pytest.raises(SerializationError, match="socket.socket") as refused:
                await engine.workflows.signal(iid, "go", sock)
        finally:
            sock.close()
        assert refused.value.instance_id == "s-2" and "payload of signal 'go'" in str(refused.value)
        assert await store.peek_signal(iid, "go") is None
        await engine.workflows.cancel(iid)
