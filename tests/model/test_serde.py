"""The record codec: plain pickle where it is enough, cloudpickle for what only this process could load."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

from durable import StepResult, StepStatus
from durable._model.serde import decode_step, encode_step

WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import dataclass
    from durable import StepResult, StepStatus
    from durable._model.serde import encode_step

    @dataclass
    class Point:          # defined in __main__: no other process can import it
        x: int
        y: int

    def scale(p):
        return Point(p.x * 2, p.y * 2)

    rec = StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", function="__main__.s",
                     output={"point": Point(1, 2), "fn": scale})
    open(sys.argv[1], "wb").write(encode_step(rec))
    rec = StepResult(step_name="t", status=StepStatus.COMPLETED, key="t#0", output=lambda v: v + 1)
    open(sys.argv[1] + ".lambda", "wb").write(encode_step(rec))
    """
)


def test_values_from_main_load_in_another_process(tmp_path: Path) -> None:
    out = tmp_path / "record"
    subprocess.run([sys.executable, "-c", WRITER, str(out)], check=True, timeout=60)
    rec = decode_step(out.read_bytes())
    assert pickle.loads(out.read_bytes()[5:])[:2] == ("step", "s")  # a format-4 record: a tuple
    point, scale = rec.output["point"], rec.output["fn"]
    assert (point.x, point.y) == (1, 2)
    assert scale(point).x == 2
    assert rec.function == "__main__.s"
    assert decode_step((tmp_path / "record.lambda").read_bytes()).output(1) == 2


def test_importable_values_and_main_like_strings_round_trip() -> None:
    from datetime import datetime, timezone

    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for output in ["__main__", "__main__.s", {"k": [1, 2.5, None]}, when, Path("x"), ValueError("boom")]:
        rec = StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", output=output)
        back = decode_step(encode_step(rec)).output
        if isinstance(output, BaseException):
            assert type(back) is ValueError and str(back) == "boom"
        else:
            assert back == output


def test_record_times_round_trip_exactly_in_any_zone() -> None:
    import pickle
    from datetime import UTC, datetime, timedelta, timezone

    from durable._model.serde import _seal

    paris = timezone(timedelta(hours=1), "CET")
    times = [
        datetime(2026, 11, 24, 20, 15, 1, 999_999, tzinfo=UTC),
        datetime(1900, 1, 1, tzinfo=UTC),  # before the epoch
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=paris),  # another zone: stored as the datetime itself
        datetime(2026, 6, 1, 12, 0),  # naive: kept naive
    ]
    for when in times:
        rec = StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", started_at=when,
                         completed_at=when, next_attempt_at=when)
        back = decode_step(encode_step(rec))
        for got in (back.started_at, back.completed_at, back.next_attempt_at):
            assert got == when and got is not None and got.tzinfo == when.tzinfo
    # A format-2 record (times as aware datetimes) still reads.
    when = times[0]
    old = {"step_name": "s", "status": "completed", "key": "s#0", "started_at": when, "attempts": 1,
           "step_type": "task"}
    back = decode_step(_seal(pickle.dumps(old)))
    assert back.started_at == when and back.started_at.tzinfo is UTC


def test_a_record_naming_code_this_process_cannot_import_is_not_called_corrupt(tmp_path: Path) -> None:
    """An intact record whose value's class cannot be imported here says so, instead of 'corrupt'."""
    import pytest

    from durable import StoreError

    writer = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[2])
        from shapes import Square
        from durable import StepResult, StepStatus
        from durable._model.serde import encode_step
        rec = StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", output=Square(2))
        open(sys.argv[1], "wb").write(encode_step(rec))
        """
    )
    (tmp_path / "shapes").mkdir()
    (tmp_path / "shapes" / "__init__.py").write_text("class Square:\n    def __init__(self, n):\n        self.n = n\n")
    out = tmp_path / "record"
    subprocess.run([sys.executable, "-c", writer, str(out), str(tmp_path)], check=True, timeout=60)
    with pytest.raises(StoreError) as info:
        decode_step(out.read_bytes(), "steps/s#0", "/the/store")
    message = str(info.value)
    assert "corrupt" not in message and "cannot import" in message and "shapes" in message


def test_a_main_class_loads_as_the_resumed_scripts_own_class(tmp_path: Path) -> None:
    """A script resumed in a new process gets its own __main__ class back, so `except MyError` still matches."""
    script = textwrap.dedent(
        """
        import sys
        from durable import StepResult, StepStatus
        from durable._model.serde import decode_step, encode_step

        class Boom(Exception):
            pass

        if sys.argv[1] == "write":
            rec = StepResult(step_name="s", status=StepStatus.FAILED, key="s#0", exception=Boom("x"), output=Boom)
            open(sys.argv[2], "wb").write(encode_step(rec))
        else:
            rec = decode_step(open(sys.argv[2], "rb").read())
            assert type(rec.exception) is Boom and rec.output is Boom, (type(rec.exception), Boom)
            try:
                raise rec.exception
            except Boom:
                print("caught by the script's own class")
        """
    )
    path = tmp_path / "main_script.py"
    path.write_text(script)
    record = tmp_path / "record"
    subprocess.run([sys.executable, str(path), "write", str(record)], check=True, timeout=60)
    out = subprocess.run([sys.executable, str(path), "read", str(record)], check=True, timeout=60,
                         capture_output=True, text=True)
    assert "caught by the script's own class" in out.stdout
    # Another program (no such class in its __main__) still loads the copy stored by value.
    rec = decode_step(record.read_bytes())
    assert type(rec.exception).__name__ == "Boom" and str(rec.exception) == "x"
