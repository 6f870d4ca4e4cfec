"""Small shared pieces of the installer: running commands, timing steps, version stamps."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ToolchainError

Log = Callable[[str], None]


def run(command: Sequence[str], step: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        input_bytes: bytes | None = None) -> str:
    """Run a command; on failure raise ``ToolchainError`` naming the step and the output's tail."""
    result = subprocess.run(
        list(command), cwd=cwd, env=env, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise ToolchainError(f"{step} failed (exit {result.returncode}): {' '.join(command)}\n{tail}")
    return output


def read_stamp(path: Path) -> str:
    """The version recorded next to a built artifact ('' if none)."""
    return path.read_text().strip() if path.exists() else ""


def write_stamp(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


@dataclass
class StepReport:
    name: str
    outcome: str
    seconds: float


@dataclass
class Timeline:
    """Prints each step as it starts and ends, and keeps a summary of what was built."""

    log: Log
    reports: list[StepReport] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """``with timeline.step("pulumi CLI") as outcome: ...; outcome.append("built v3.x")``."""
        self.log(f"==> {name}")
        outcome: list[str] = []
        started = time.monotonic()
        try:
            yield outcome
        except BaseException:
            self.reports.append(StepReport(name, "FAILED", time.monotonic() - started))
            raise
        seconds = time.monotonic() - started
        text = outcome[0] if outcome else "done"
        self.reports.append(StepReport(name, text, seconds))
        self.log(f"    {text} ({seconds:.1f}s)")

    def summary(self) -> str:
        width = max((len(r.name) for r in self.reports), default=10)
        lines = [f"{r.name.ljust(width)}  {r.seconds:7.1f}s  {r.outcome}" for r in self.reports]
        total = sum(r.seconds for r in self.reports)
        return "\n".join([*lines, f"{'total'.ljust(width)}  {total:7.1f}s"])
