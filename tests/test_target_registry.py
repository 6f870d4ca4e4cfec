"""A target is one module (or folder) plus one registry row: everything that names targets reads the registry.

``tests/minimal_target.py`` is a target defined only here, registered the way a
third party registers one (an entry point of the ``toolkit.targets`` group,
installed for the test as a distribution on ``sys.path``). Without any other
change it gets its decorator (``toolkit.minimal``), its Prefect decorator and
worker (``toolkit.prefect``), its place in the CLI, a real preview and a real
call, and the conformance suite every target passes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.infra.conformance import TargetConformance, items_argument
from tests.infra.mocking import ProgramRun
from tests.leaks import assert_nothing_left
from tests.minimal_target import MinimalTarget
from toolkit import settings
from toolkit.infra import registry

LOCAL_PROCESS = "toolkit:index:LocalProcess"
FACES = ("toolkit", "toolkit.decorators", "toolkit.prefect", "toolkit.prefect.infrastructure")


def _forget() -> None:
    """Drop what the registry and the faces cached, so each test sees the registry as it is now."""
    registry.registry.cache_clear()
    registry.get_target_class.cache_clear()
    for module in (sys.modules[name] for name in FACES if name in sys.modules):
        for attribute in ("minimal", "MinimalWorker"):
            vars(module).pop(attribute, None)


@pytest.fixture
def minimal_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The minimal target's row, as an installed distribution's entry point."""
    dist = tmp_path / "toolkit_minimal_target-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toolkit-minimal-target\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[toolkit.targets]\nminimal = tests.minimal_target:ROW\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _forget()
    yield
    monkeypatch.undo()
    _forget()


def double(value: int) -> int:
    return value * 2


def test_a_registered_target_gets_its_decorator_prefect_names_and_cli_entry(minimal_registered: None) -> None:
    import toolkit
    import toolkit.prefect
    from toolkit.cli.main import app
    from toolkit.prefect.infrastructure import PrefectBoundFlow, PrefectWorker

    assert "minimal" in toolkit.__all__ and "minimal" in registry.target_names()
    bound = toolkit.minimal(pool="minimal-pool")(double)
    assert (bound.target_type, bound.pool, bound.local(4)) == ("minimal", "minimal-pool", 8)
    assert {"minimal", "MinimalWorker"} <= set(toolkit.prefect.__all__)
    flow = toolkit.prefect.minimal(work_pool="minimal-pool")(double)
    assert isinstance(flow, PrefectBoundFlow) and flow.target_type == "minimal"
    worker = toolkit.prefect.MinimalWorker
    assert issubclass(worker, PrefectWorker) and worker.target_type == "minimal"
    shown = CliRunner().invoke(app, ["pool", "default-template", "minimal"])
    assert shown.exit_code == 0 and '"{{ env }}"' in shown.output


def test_an_unregistered_name_is_refused_with_the_known_ones() -> None:
    import toolkit

    with pytest.raises(AttributeError):
        toolkit.minimal  # noqa: B018 - the attribute access is the test
    with pytest.raises(Exception, match="unknown target type 'minimal'. Known: azure_container_instance"):
        registry.get_target_class("minimal")


def test_an_entry_point_that_names_no_row_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "toolkit_wrong_target-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toolkit-wrong-target\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[toolkit.targets]\nwrong = tests.minimal_target:MinimalTarget\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.registry.cache_clear()
    try:
        with pytest.raises(Exception, match="names a .*, not a toolkit.infra.registry.TargetRow"):
            registry.registry()
    finally:
        monkeypatch.undo()
        registry.registry.cache_clear()


@pytest.mark.engine
def test_a_registered_target_previews_and_runs_for_real(minimal_registered: None) -> None:
    import toolkit
    import toolkit.prefect
    from toolkit.futures import wait_for_teardowns
    from toolkit.pools.registry import PoolRegistry, WorkPool

    pools = PoolRegistry()
    pools.save(WorkPool(name="minimal-pool", type="minimal"), overwrite=True)
    try:
        bound = toolkit.minimal(pool="minimal-pool")(double)
        plan = bound.preview(21)
        assert ("create", LOCAL_PROCESS, "job") in {(c.op, c.type, c.name) for c in plan.changes}
        assert bound(21) == 42
        assert toolkit.prefect.minimal(work_pool="minimal-pool")(double)(5) == 10
    finally:
        wait_for_teardowns()
        pools.delete("minimal-pool")
    assert_nothing_left()


class TestMinimalTarget(TargetConformance):
    """The conformance suite, for a target the toolkit's own code has never named."""

    target_cls = MinimalTarget
    sample_variables = {"env": {"MODE": "fast"}}
    mock_outputs = {LOCAL_PROCESS: {"pid": 4242}}
    job_type = LOCAL_PROCESS
    expected_resources = {
        ("toolkit:index:RunStorage", "run-directory"),
        (LOCAL_PROCESS, "job"),
    }

    @property
    def expected_exports(self) -> dict[str, Any]:  # type: ignore[override]
        return {"pids": [4242], "run_dir": str(settings.home() / "work" / self.run_id)}

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        workers = run.of_type(LOCAL_PROCESS)
        counts = {items_argument(worker.inputs["argv"]) for worker in workers}
        assert len(counts) == 1
        return counts.pop(), len(workers)
