"""Every Python code block of the README and docs/ runs here, or says why it cannot.

Blocks are found by pytest-examples. The line above a block may mark it (an HTML comment, invisible
on GitHub and on the site):

- none: the block needs no engine, Docker or cluster and runs in the fast lane;
- ``<!-- example: engine -->`` (``engine docker`` for the docker pool): it runs for real on the
  built-in local pools and carries those markers;
- ``<!-- example: skip: REASON -->``: it needs what the suite does not have (a cloud account, a
  cluster pool, your own inputs); it is collected and reported as skipped with REASON.

A shell block of CLI commands that need no engine, Docker or cloud is marked ``<!-- example: shell -->``:
its commands run one by one in the fast lane, against a fresh ``TOOLKIT_HOME``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

from tests.leaks import assert_nothing_left
from toolkit.futures import wait_for_teardowns

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- example: (?P<what>.+?) -->")
RUN_MARKERS = {"engine", "docker"}


@dataclass(frozen=True)
class Marking:
    markers: tuple[str, ...] = ()
    skip: str | None = None


def marking(example: CodeExample) -> Marking:
    """What the comment on the nearest non-blank line above the block's fence says."""
    above = [line for line in example.path.read_text().splitlines()[: example.start_line - 1] if line.strip()]
    found = MARK.fullmatch(above[-1].strip()) if above else None
    if found is None:
        return Marking()
    what = found["what"]
    if what.startswith("skip:"):
        return Marking(skip=what.removeprefix("skip:").strip())
    words = tuple(what.split())
    unknown = set(words) - RUN_MARKERS
    if unknown:
        raise ValueError(f"{example.path}:{example.start_line}: unknown example marker(s) {sorted(unknown)}")
    return Marking(markers=words)


EXAMPLES = sorted(find_examples(ROOT / "README.md", ROOT / "docs"), key=lambda e: (str(e.path), e.start_line))


def _param(example: CodeExample) -> object:
    mark = marking(example)
    marks = [getattr(pytest.mark, name) for name in mark.markers]
    if mark.skip:
        marks.append(pytest.mark.skip(reason=f"not runnable here: {mark.skip}"))
    return pytest.param(example, marks=marks, id=f"{example.path.relative_to(ROOT)}:{example.start_line}")


@pytest.mark.parametrize("example", [_param(example) for example in EXAMPLES])
def test_example(example: CodeExample, eval_example: EvalExample, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files a block writes or includes stay out of the repository
    eval_example.run(example)
    if marking(example).markers:
        # A call's teardown goes on after its result: it belongs to this test, not to the next one.
        wait_for_teardowns()
        assert_nothing_left()


def test_every_python_block_is_run_or_says_why_not() -> None:
    """The README and docs have Python blocks, each one runnable or skipped with a reason."""
    readme = [e for e in EXAMPLES if e.path.name == "README.md"]
    assert readme and len(EXAMPLES) > len(readme)
    for example in EXAMPLES:
        mark = marking(example)
        assert mark.skip is None or len(mark.skip) > 10, f"{example.path}:{example.start_line}: say why it is skipped"


SHELL_BLOCK = re.compile(r"^<!-- example: shell -->\n```(?:bash|console|sh)\n(?P<body>.*?)^```", re.M | re.S)


def _shell_blocks() -> list[object]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for block in SHELL_BLOCK.finditer(text):
            line = text.count("\n", 0, block.start()) + 1
            found.append(pytest.param(block["body"], id=f"{path.relative_to(ROOT)}:{line}"))
    return found


@pytest.mark.parametrize("body", _shell_blocks())
def test_shell_example(body: str, tmp_path: Path) -> None:
    env = {**os.environ, "TOOLKIT_HOME": str(tmp_path / "home"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for line in body.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            done = subprocess.run(shlex.split(command), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
