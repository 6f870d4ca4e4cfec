"""Record every Pulumi CLI and plugin process a run starts: argv, start, end, exit status.

A directory of bash wrappers shadows the real binaries: ``pulumi`` (the
toolkit runs the CLI named by ``TOOLKIT_PULUMI``) and the plugins the engine
looks up on ``PATH`` (the Automation API puts the CLI's directory first on the
CLI's ``PATH``, and the engine prefers plugins found there). Each wrapper runs
the real binary as a child, not by ``exec``, so it can log when it ended; the
trap keeps bash waiting for the child when the engine interrupts a plugin's
process group, so the logged end is the child's. One line per process, written
in a single ``printf`` so concurrent processes do not interleave. Used by the
CLI-count test (counts) and by ``bench/run.py`` (the per-call breakdown).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

_WRAPPER = """#!/bin/bash
started=$EPOCHREALTIME
trap ':' INT TERM
{real} "$@"
code=$?
ended=$EPOCHREALTIME
times >{scratch}/times.$$
mapfile -t cpu <{scratch}/times.$$
printf '%s\\t%s\\t%s\\t%s\\t%s\\n' "$started" "$ended" "$code" "${{cpu[1]}}" "{name} ${{*@Q}}" >>{log}
exit $code
"""


@dataclass(frozen=True)
class TracedCall:
    """One process a run started."""

    name: str
    """'pulumi' or the plugin's executable name."""
    args: list[str]
    started: float
    ended: float
    code: int
    cpu: float
    """CPU seconds (user + system) of the process and the children it waited for."""

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def command(self) -> str:
        """'pulumi up', 'pulumi stack tag set', 'pulumi-resource-docker' ...: what a breakdown groups by."""
        if self.name != "pulumi":
            return self.name
        words = [arg for arg in self.args if not arg.startswith("-")]
        if words[:1] == ["stack"] and len(words) > 1:
            return " ".join(["pulumi", *words[:2]] + ([words[2]] if words[1] == "tag" and len(words) > 2 else []))
        return " ".join(["pulumi", *words[:1]])


class CliTrace:
    """Wrappers for ``pulumi`` and the given plugins in ``root``; ``env()`` routes a client through them."""

    def __init__(self, root: Path, pulumi: Path, plugins: dict[str, Path]) -> None:
        self.bin_dir = root / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.log = root / "calls.log"
        self.log.touch()
        for name, real in {"pulumi": pulumi, **plugins}.items():
            wrapper = self.bin_dir / name
            wrapper.write_text(
                _WRAPPER.format(
                    real=shlex.quote(str(real)), name=name, log=shlex.quote(str(self.log)), scratch=shlex.quote(str(root))
                )
            )
            wrapper.chmod(0o755)

    def env(self) -> dict[str, str]:
        """What to set in the client's environment (the CLI's own PATH starts with ``bin_dir``)."""
        return {"TOOLKIT_PULUMI": str(self.bin_dir / "pulumi")}

    def calls(self) -> list[TracedCall]:
        """Every process logged so far, in order of start."""
        found = []
        for line in self.log.read_text().splitlines():
            started, ended, code, cpu, words = line.split("\t", 4)
            name, *args = shlex.split(words)
            found.append(TracedCall(name, args, float(started), float(ended), int(code), _cpu_seconds(cpu)))
        return sorted(found, key=lambda call: call.started)

    def clear(self) -> None:
        self.log.write_text("")


def _cpu_seconds(times: str) -> float:
    """bash ``times``' children line, '0m0.120s 0m0.031s', as seconds (user + system)."""
    total = 0.0
    for part in times.split():
        minutes, _, seconds = part.rstrip("s").partition("m")
        total += 60 * float(minutes) + float(seconds)
    return total


def plugins_on_path(names: list[str], path: str | None = None) -> dict[str, Path]:
    """The real executables of ``names`` as the engine would find them on ``PATH``."""
    found = {}
    for directory in (path or os.environ.get("PATH", "")).split(os.pathsep):
        for name in names:
            candidate = Path(directory) / name
            if name not in found and candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate
    return found
