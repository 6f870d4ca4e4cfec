"""Every Python code block of the README and docs/ runs here, or says why it cannot.

Blocks are found by pytest-examples. The line above a block may mark it (an HTML comment, invisible
on GitHub and on the site):

- none: the block needs no engine, Docker or cluster and runs in the fast lane;
- ``<!-- example: engine -->`` (``engine docker`` for the docker pool): it runs for real on the
  built-in local pools and carries those markers;
- ``<!-- example: preview POOL=TARGET ... -->``: it needs a cloud account or a cluster; it runs in the
  fast lane with pool POOL registered for TARGET and every call made as a preview of the target's real
  program under the project's mocks (tests/mocked_previews.py), and each preview must create the
  target's job resource;
- ``<!-- example: skip: REASON -->``: it needs what the suite does not have (Prefect's own venv, your own
  inputs); it is collected and reported as skipped with REASON.

Every shell block (bash, console, sh) is marked too: ``<!-- example: shell -->`` when its CLI commands need
no engine, Docker or cloud (they run one by one in the fast lane, against a fresh ``TOOLKIT_HOME``),
``<!-- example: shell engine -->`` when they need the Pulumi CLI (run with the ``engine`` marker), or
``<!-- example: skip: REASON -->``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

from tests import docs_previews
from tests.leaks import assert_nothing_left
from tests.mocked_previews import calls_as_mocked_previews
from toolkit.futures import wait_for_teardowns

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- example: (?P<what>.+?) -->")
RUN_MARKERS = {"engine", "docker"}


@dataclass(frozen=True)
class Marking:
    markers: tuple[str, ...] = ()
    skip: str | None = None
    pools: dict[str, str] = field(default_factory=dict)
    """Pool name -> target of a block run as previews under mocks."""


def marking(example: CodeExample) -> Marking:
    """What the comment on the nearest non-blank line above the block's fence says."""
    above = [line for line in example.path.read_text().splitlines()[: example.start_line - 1] if line.strip()]
    found = MARK.fullmatch(above[-1].strip()) if above else None
    if found is None:
        return Marking()
    what = found["what"]
    if what.startswith("skip:"):
        return Marking(skip=what.removeprefix("skip:").strip())
    if what.startswith("preview "):
        pools = dict(word.split("=", 1) for word in what.split()[1:])
        unknown = set(pools.values()) - set(docs_previews.MOCKED)
        if not pools or unknown:
            raise ValueError(f"{example.path}:{example.start_line}: preview POOL=TARGET with a target of "
                             f"{docs_previews.MOCKED}, got {what!r}")
        return Marking(pools=pools)
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


def _run(eval_example: EvalExample, example: CodeExample) -> None:
    """Run the block; its error as an assertion naming the block, as pytest cannot show the traceback of code
    pytest-examples compiled (on Python 3.11 that aborts the whole session with an INTERNALERROR)."""
    try:
        eval_example.run(example)
    except Exception as exc:
        raise AssertionError(f"{example.path.name}:{example.start_line}: {type(exc).__name__}: {exc}") from None


@pytest.mark.parametrize("example", [_param(example) for example in EXAMPLES])
def test_example(example: CodeExample, eval_example: EvalExample, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files a block writes or includes stay out of the repository
    pools = marking(example).pools
    if pools:
        with calls_as_mocked_previews(pools, tmp_path / "home") as seen:
            _run(eval_example, example)
        job_types = {docs_previews.conformance_suite(target).job_type for target in pools.values()}
        assert seen.previews, "the example made no call or preview"
        for changes in seen.previews:
            assert job_types & {change.type for change in changes}, f"no job resource {job_types} in {sorted({change.type for change in changes})}"
        return
    _run(eval_example, example)
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


SHELL_FENCE = re.compile(r"^```(?:bash|console|sh|shell)\n(?P<body>.*?)^```", re.M | re.S)
SHELL_RUN = {"shell": (), "shell engine": ("engine",)}
"""A shell block's marker -> the pytest markers its run carries (``shell``: the fast lane)."""


@dataclass(frozen=True)
class ShellBlock:
    where: str
    body: str
    mark: str | None
    """The marker's text (``shell``, ``shell engine``, ``skip: REASON``), None when there is none."""

    def commands(self) -> list[list[str]]:
        """Each command's words: ``#`` comments dropped, lines ending in ``\\`` joined to the next."""
        found, pending = [], ""
        for line in self.body.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            words = shlex.split(pending + line, comments=True)
            pending = ""
            if words:
                found.append(words)
        return found


def _shell_blocks() -> list[ShellBlock]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        for block in SHELL_FENCE.finditer(text):
            above = [line for line in text[: block.start()].splitlines() if line.strip()]
            mark = MARK.fullmatch(above[-1].strip()) if above else None
            line = text.count("\n", 0, block.start()) + 1
            found.append(ShellBlock(f"{path.relative_to(ROOT)}:{line}", block["body"], mark["what"] if mark else None))
    return found


SHELL_BLOCKS = _shell_blocks()


def _shell_param(block: ShellBlock) -> object:
    if block.mark and block.mark.startswith("skip:"):
        marks = [pytest.mark.skip(reason=f"not runnable here: {block.mark.removeprefix('skip:').strip()}")]
    else:
        marks = [getattr(pytest.mark, name) for name in SHELL_RUN[block.mark]]
    return pytest.param(block, marks=marks, id=block.where)


def test_every_shell_block_is_run_or_says_why_not() -> None:
    """Each shell block of the README and docs is marked to run (in the fast lane or with the engine) or
    skipped with a reason, so none is silently left out."""
    assert SHELL_BLOCKS
    for block in SHELL_BLOCKS:
        skip = block.mark.removeprefix("skip:").strip() if block.mark and block.mark.startswith("skip:") else None
        assert block.mark in SHELL_RUN or (skip and len(skip) > 10), (
            f"{block.where}: mark it <!-- example: shell --> (needs no engine, Docker or cloud), "
            f"<!-- example: shell engine --> or <!-- example: skip: REASON -->, got {block.mark!r}"
        )


@pytest.mark.parametrize("block", [_shell_param(block) for block in SHELL_BLOCKS if block.mark in SHELL_RUN
                                   or (block.mark or "").startswith("skip:")])
def test_shell_example(block: ShellBlock, tmp_path: Path) -> None:
    """The block's commands one by one, against a fresh ``TOOLKIT_HOME``; each must succeed."""
    env = {**os.environ, "TOOLKIT_HOME": str(tmp_path / "home"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for command in block.commands():
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{shlex.join(command)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
