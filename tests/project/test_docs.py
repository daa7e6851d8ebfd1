"""Every code block of the documentation runs, so the docs cannot rot.

The convention, for every ``docs/*.md`` page (one test per page):

- ```` ```python ```` blocks run in order in one namespace per page, with the
  working directory a fresh temporary directory per page. A python block whose
  first line is ``# file: NAME.py`` is written to that file in the directory
  instead of being run (the directory is on ``sys.path``). Blocks do not use
  top-level ``await``: one that needs the engine calls ``trio.run(main)`` or
  ``durable.testing.run(...)``.
- ```` ```console ```` blocks: each line starting with ``$ `` is a shell command
  run in the page's directory, with this interpreter's ``bin`` directory first
  on ``PATH`` (so ``durable`` and ``python`` are the ones under test). It must
  exit 0, unless the line ends with ``# exit N``: then N. Other lines are
  sample output and are not compared.
- Any other fence (```` ```text ````, ```` ```mermaid ````, ```` ```json ````,
  ```` ```toml ````) is output or configuration, not run.

README.md's python blocks are only compiled (top-level ``await``/``async with``
allowed), not run: they are excerpts that lean on each other and on names
defined elsewhere (its first example's steps have ``...`` bodies).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
import traceback
import types
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/project/ -> tests/ -> root
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")
_FILE = re.compile(r"^#\s*file:\s*(\S+)\s*$")


@attrs.frozen
class Block:
    """One fenced code block: its language, the line of its opening fence, its text."""

    lang: str
    line: int
    text: str


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, in order (indented fences too, e.g. in lists)."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = (m["info"].strip().split() or [""])[0].lower()
        start = i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""):
            text = lines[i]
            body.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
            i += 1
        if i >= len(lines):
            raise AssertionError(f"{path.name}: the code block opened at line {start} is never closed")
        found.append(Block(lang, start, "\n".join(body) + "\n"))
        i += 1
    return found


def _run_python(page: str, block: Block, namespace: dict[str, object], scratch: Path) -> None:
    # Each block is compiled from a real file whose line numbers are the page's,
    # so tracebacks point into the page and inspect.getsource() works (the
    # @workflow compiler reads a function's source).
    source = "\n" * block.line + block.text
    filename = scratch / f"{Path(page).stem}_md_line_{block.line}.py"
    filename.write_text(source, encoding="utf-8")
    try:
        code = compile(source, str(filename), "exec")
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from a block are failures too
        frames = traceback.format_exception(exc)
        pytest.fail(
            f"docs/{page}: the python block at line {block.line} raised {type(exc).__name__}: {exc}\n\n"
            + "".join(frames),
            pytrace=False,
        )


def _run_console(page: str, block: Block, cwd: Path, env: dict[str, str]) -> None:
    for offset, line in enumerate(block.text.splitlines(), start=1):
        if not line.startswith("$ "):
            continue
        command = line[2:].strip()
        m = _EXIT.search(command)
        expected = int(m.group(1)) if m else 0
        out = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != expected:
            pytest.fail(
                f"docs/{page}: the command at line {block.line + offset} exited {out.returncode}, "
                f"expected {expected}:\n$ {command}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}",
                pytrace=False,
            )


@pytest.mark.parametrize("page", PAGES)
def test_doc_page_code_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python and console block of the page runs as the page says it does."""
    cwd = tmp_path / "page"
    scratch = tmp_path / "blocks"
    cwd.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)

    # One module per page: names defined in a block pickle by reference, as in a real module.
    module_name = f"durable_docs_{Path(page).stem.replace('-', '_')}"
    module = types.ModuleType(module_name)
    module.__file__ = str(scratch / f"{module_name}.py")
    before = set(sys.modules)
    sys.modules[module_name] = module
    try:
        for block in blocks(DOCS / page):
            if block.lang == "python":
                first = block.text.split("\n", 1)[0]
                m = _FILE.match(first)
                if m:
                    target = cwd / m.group(1)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.text.split("\n", 1)[1], encoding="utf-8")
                    importlib.invalidate_caches()
                else:
                    _run_python(page, block, module.__dict__, scratch)
            elif block.lang == "console":
                _run_console(page, block, cwd, env)
    finally:
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            file = getattr(mod, "__file__", None) or ""
            if name == module_name or file.startswith(str(tmp_path)):
                del sys.modules[name]


def test_the_pages_exist_and_the_index_links_resolve() -> None:
    """The docs pages are there, and every page the index links to exists."""
    assert {"index.md", "concepts.md", "frontends.md", "guarantees.md", "testing.md", "mapping.md", "cli.md",
            "primitives.md", "waiting.md"} <= set(PAGES)
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([\w.-]+\.md)(?:#[\w-]*)?\)", index))
    assert links >= {"concepts.md", "frontends.md", "guarantees.md", "testing.md", "mapping.md", "cli.md",
                     "primitives.md", "waiting.md"}
    for link in links:
        assert (DOCS / link).exists(), f"index.md links to a missing page {link}"


def test_readme_python_blocks_compile() -> None:
    """README's python blocks are valid Python (top-level await allowed); they are excerpts, not run."""
    readme = ROOT / "README.md"
    python = [b for b in blocks(readme) if b.lang == "python"]
    assert python
    for block in python:
        try:
            compile(block.text, f"README.md:{block.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"README.md: the python block at line {block.line} is not valid Python: {exc}", pytrace=False)


def test_block_parser(tmp_path: Path) -> None:
    """Fences are found with their language and opening line, indented ones (in lists) de-indented."""
    page = tmp_path / "p.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n- item\n\n  ```console\n  $ durable show nope  # exit 2\n"
        "  sample output\n  ```\n\n````text\n```\n````\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.lang, b.line) for b in found] == [("python", 3), ("console", 9), ("text", 14)]
    assert found[0].text == "x = 1\n" and found[1].text.startswith("$ durable show")
    assert found[2].text == "```\n"
    assert _EXIT.search("durable show nope  # exit 2").group(1) == "2"  # type: ignore[union-attr]
    assert _FILE.match("# file: orders.py").group(1) == "orders.py"  # type: ignore[union-attr]
