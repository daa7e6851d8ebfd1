"""The record codec: plain pickle where it is enough, cloudpickle for what only this process could load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from durable import StepResult, StepStatus
from durable._serde import decode_step, encode_step

WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import dataclass
    from durable import StepResult, StepStatus
    from durable._serde import encode_step

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
