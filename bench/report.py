"""bench/results.md, rendered from the JSON each bench run saved, and from nothing else.

    .venv/bin/python bench/report.py          # render bench/results.md again from bench/results/*.json

Every bench entry point measures, saves what it measured as one JSON document
per section (``bench/results/<section>.json``, committed) and renders
bench/results.md from every saved section. Nothing else writes results.md:
tests/test_bench_results.py renders it again from the JSON (fast lane, no
engine) and fails on any difference, so a figure or a sentence in it is
always what a renderer made of one run's measurements.

A saved section records the exact command line that measured it, when, on
what machine and the load average at its start and end; the table at the top
of results.md lists them, so figures from different runs are never mistaken
for one run's. Absolute times depend on the load: compare ratios against the
baseline measured in the same run.

Adding a section (see also bench/README.md):

1. In your bench module, a function that measures and returns JSON-able data
   (string keys), and ``render(saved: dict, sections: dict[str, dict]) -> list[str]``
   that turns ``saved`` (``{"command", "started", "host", "load_average", ...,
   "data": <your data>}``) into Markdown lines. A renderer reads only its
   arguments: no clock, no ``os.cpu_count()`` (``saved["host"]["cores"]``), no
   files; ``sections`` holds every saved section, for a comparison with
   another one (say where its figure comes from when its ``run`` differs).
2. One row in ``SECTIONS`` below: its name, module file and place in results.md.
3. Your entry point calls ``Run.begin().section("<name>", measure, *args)``
   (bench/run.py runs several sections in one process the same way).

A claim in the text (nothing left behind, a goal met, N runs checked) is
computed by the bench and rendered from its data, never written by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "results.md"


@dataclass(frozen=True)
class Section:
    name: str
    """The JSON file's stem: bench/results/<name>.json."""
    module: str
    """The bench module (bench/<module>.py) whose ``render`` function renders it."""
    title: str
    """Its heading in results.md's table of sections."""
    render: str = "render"


SECTIONS = (
    Section("overview", "run", "Latency, phases, throughput, CLI processes"),
    Section("prefect", "run", "Prefect 3 `@docker` on the same engine", render="render_prefect"),
    Section("environments", "environments", "Environments"),
    Section("map", "map", "Many calls, one stack"),
    Section("kubernetes", "on_cluster", "`@kubernetes` on the local cluster"),
    Section("runner_start", "runner_start", "The runner's own start in the pods' image"),
    Section("guardrails", "guardrails", "Guardrails"),
    Section("ui", "ui", "Dashboard"),
    Section("soak", "soak", "Chaos soak"),
    Section("candidates15", "candidates", "Tried for issue 15", render="render_15"),
    Section("candidates29", "candidates29", "Tried for issue 29", render="render_section"),
    Section("standby29", "standby29", "Tried for issue 29: the engine started ahead, the kept key"),
)
"""Every section results.md may hold, in the order it shows them."""


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed from the repository's root: interpreter and script relative to it."""
    argv = list(sys.argv if argv is None else argv)
    words = [_relative(sys.executable), _relative(argv[0]), *argv[1:]]
    return shlex.join(words)


def _relative(path: str) -> str:
    try:
        return str(Path(path).absolute().relative_to(ROOT))
    except ValueError:
        return path


def host() -> dict[str, Any]:
    return {"node": platform.node(), "cores": os.cpu_count(), "python": platform.python_version()}


@dataclass
class Run:
    """One invocation of a bench entry point; every section it saves shares its command and id."""

    command: str
    id: str
    results_dir: Path = RESULTS_DIR
    results_md: Path | None = RESULTS_MD

    @classmethod
    def begin(cls, results_dir: Path = RESULTS_DIR, results_md: Path | None = RESULTS_MD) -> Run:
        return cls(command_line(), time.strftime("%Y-%m-%dT%H:%M:%S"), results_dir, results_md)

    def section(self, name: str, measure: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``measure(*args, **kwargs)``, saved as section ``name`` with when, where and the load around
        it; then results.md is rendered again from every saved section. Returns what was saved."""
        _section(name)
        started, load_start = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()
        data = measure(*args, **kwargs)
        saved = {
            "section": name,
            "command": self.command,
            "run": self.id,
            "started": started,
            "finished": time.strftime("%Y-%m-%d %H:%M"),
            "host": host(),
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()]},
            "data": data,
        }
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{name}.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
        if self.results_md is not None:
            write(self.results_dir, self.results_md)
        return load(path)


def _section(name: str) -> Section:
    for section in SECTIONS:
        if section.name == name:
            return section
    raise KeyError(f"no section {name!r} in bench/report.py's SECTIONS ({', '.join(s.name for s in SECTIONS)}); add its row")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def saved_sections(results_dir: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """Every saved section by name; a JSON file no row of ``SECTIONS`` names is an error."""
    found = {path.stem: load(path) for path in sorted(results_dir.glob("*.json"))}
    for name in found:
        _section(name)
    return found


def _renderer(section: Section) -> Callable[[dict[str, Any], dict[str, dict[str, Any]]], list[str]]:
    module = _module(section.module)
    return getattr(module, section.render)


_MODULES: dict[str, ModuleType] = {}


def _module(name: str) -> ModuleType:
    """bench/<name>.py loaded by path (names such as ``map`` or ``run`` must not shadow anything)."""
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        _MODULES[name] = module
    return _MODULES[name]


def render_all(results_dir: Path = RESULTS_DIR) -> str:
    sections = saved_sections(results_dir)
    lines = [
        "# Benchmark results",
        "",
        "Rendered by `bench/report.py` from the JSON in `bench/results/` alone: each bench entry point saves "
        "what it measured there and renders this file again; it is never edited by hand "
        "(tests/test_bench_results.py renders it from the JSON and fails on any difference). Machines here "
        "are shared and noisy: absolute times move with the load, so compare each figure with the baseline "
        "measured in the same run.",
        "",
        "| section | produced by | started | machine | 1-minute load average, start → end |",
        "|---|---|---|---|---|",
    ]
    for section in SECTIONS:
        saved = sections.get(section.name)
        if saved is None:
            continue
        lines.append(
            f"| [{section.title}](#{section.name}) | `{saved['command']}` | {saved['started']} "
            f"| {_machine(saved['host'])} | {_load(saved.get('load_average'))} |"
        )
    lines.append("")
    for section in SECTIONS:
        saved = sections.get(section.name)
        if saved is None:
            continue
        lines += [f'<a id="{section.name}"></a>', "", *_renderer(section)(saved, sections), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _machine(host: dict[str, Any]) -> str:
    """What a section recorded of its machine (sections saved before this module kept only the cores)."""
    words = [host.get("node"), f"{host['cores']} cores", f"Python {host['python']}" if host.get("python") else None]
    return ", ".join(word for word in words if word)


def _load(load_average: dict[str, list[float]] | None) -> str:
    if not load_average:
        return "in the section"
    start, end = load_average.get("start"), load_average.get("end")
    return " → ".join(f"{values[0]:.1f}" for values in (start, end) if values)


def write(results_dir: Path = RESULTS_DIR, results_md: Path = RESULTS_MD) -> None:
    results_md.write_text(render_all(results_dir))


def main() -> None:
    write()
    print(RESULTS_MD.read_text())


if __name__ == "__main__":
    main()
