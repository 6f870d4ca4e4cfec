"""bench/results.md is what bench/report.py renders from the saved JSON in bench/results/, to the byte.

No engine: the renderers read only the saved measurements. A figure or a sentence
typed into results.md by hand, or spliced in from another run, fails here.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench_module(name: str) -> ModuleType:
    """bench/<name>.py, loaded by path (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return _bench_module("report")


def test_results_md_is_rendered_from_the_saved_json(report):
    saved = sorted(path.name for path in (BENCH / "results").glob("*.json"))
    assert saved, "bench/results/ holds no saved section: results.md cannot come from the bench's own JSON"
    expected = report.render_all()
    actual = (BENCH / "results.md").read_text()
    diff = "".join(difflib.unified_diff(
        actual.splitlines(keepends=True), expected.splitlines(keepends=True),
        "bench/results.md (committed)", "rendered from bench/results/*.json",
    ))
    assert not diff, f"bench/results.md differs from what bench/report.py renders from the saved JSON:\n{diff}"


def test_every_saved_section_names_the_command_that_measured_it(report):
    entry_points = {f"bench/{path.name}" for path in BENCH.glob("*.py")}
    for name, saved in report.saved_sections().items():
        assert entry_points & set(shlex.split(saved["command"])), (name, saved["command"])
        assert saved["section"] == name
        assert saved["started"] <= saved.get("finished", saved["started"])
        assert "cores" in saved["host"]


def test_a_json_file_without_a_section_row_is_an_error(report, tmp_path):
    (tmp_path / "nobody.json").write_text(json.dumps({"section": "nobody"}))
    with pytest.raises(KeyError, match="add its row"):
        report.render_all(tmp_path)


def test_a_section_renders_from_its_json_alone(report, tmp_path):
    """The same saved file renders the same text in another directory, and a changed figure shows."""
    source = BENCH / "results"
    for path in source.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    assert report.render_all(tmp_path) == report.render_all(source)
    name = sorted(p.stem for p in tmp_path.glob("*.json"))[0]
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    saved["command"] += " --changed"
    (tmp_path / f"{name}.json").write_text(json.dumps(saved))
    assert report.render_all(tmp_path) != report.render_all(source)


def test_leftovers_are_matched_to_their_runs_by_run_id():
    """The throughput table's "left behind" cell says whose each leftover is: code, not prose."""
    run = _bench_module("run")
    found = {
        "stacks": ["run-0123456789ab"],
        "stack history and lock directories": ["/home/state/.pulumi/history/toolkit-runs/run-ba9876543210"],
        "staged bundles": ["0123456789ab.tkb", "ffffffffffff.items"],
        "containers": ["toolkit-ba9876543210-1"],
        "run directories": ["not-a-run"],
    }
    owners = run.whose_leftovers(found, toolkit_runs={"0123456789ab"}, sdk_runs={"ba9876543210"})
    assert owners == {
        "toolkit": {"stacks": ["run-0123456789ab"], "staged bundles": ["0123456789ab.tkb"]},
        "sdk": {
            "stack history and lock directories": ["/home/state/.pulumi/history/toolkit-runs/run-ba9876543210"],
            "containers": ["toolkit-ba9876543210-1"],
        },
        "unknown": {"staged bundles": ["ffffffffffff.items"], "run directories": ["not-a-run"]},
    }
    level = {"not_torn_down": [], "teardown_errors": [], "leftovers": {"toolkit": {}, "sdk": {}, "unknown": {}},
             "checked_against": {"toolkit_runs": 52, "sdk_runs": 14}}
    assert run._left_behind(level) == "nothing (checked against 52 toolkit runs' records and 14 SDK-path runs so far)"
    level["leftovers"] = owners
    assert run._left_behind(level).startswith("stacks of this run's toolkit runs: run-0123456789ab; ")
