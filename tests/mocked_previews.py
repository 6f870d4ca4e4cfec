"""Calls on cloud and cluster pools, made as previews of the target's real program under the project's mocks.

How the docs' examples for the remote targets run with no cloud account, cluster or engine
(``<!-- example: preview POOL=TARGET -->``, tests/test_doc_examples.py). Each pool the example names is
registered as a platform team would publish it: the target's default template with the sample job
variables of its conformance test (tests/infra) as defaults. While ``calls_as_mocked_previews`` is active:

- a call or ``submit`` of a decorated function, or a ``Submitter``'s ``submit``, becomes its ``.preview()``:
  a call returns the ``Plan``, a submit a finished future whose ``result()`` is the ``Plan``;
- a preview takes every step of a real one (pool, rendering and validation, the environment's plan, the
  signed bundle), and then runs the target's Pulumi program in this process under
  ``pulumi.runtime.set_mocks`` with the conformance test's mock outputs, where a real one runs it in
  ``pulumi preview``;
- the provider plugins are looked up and shown, not required (the mocks stand in for them), and no Docker
  engine answers, as on a machine with only a cloud account.

Every preview's resources are recorded, so a test can check the job resource is among them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from tests.docs_previews import conformance_suite
from tests.infra.mocking import run_program
from toolkit import preview
from toolkit.decorators import InfraFunction
from toolkit.environments import base as environment_base
from toolkit.plan import Plan, ResourceChange, _scrub
from toolkit.pools.as_code import template_with_defaults
from toolkit.pools.registry import PoolRegistry, StorageConfig, WorkPool
from toolkit.submitter import Submitter
from toolkit.toolchain import plugins


def register_pool(name: str, target: str) -> None:
    """Pool ``name`` of ``target`` in this process's pool registry, with the conformance test's settings."""
    suite = conformance_suite(target)
    storage = StorageConfig(url=suite.pool_storage_url, mode="shared-prefix") if suite.pool_storage_url else StorageConfig()
    template = template_with_defaults(target, **suite.sample_variables)
    PoolRegistry().save(WorkPool(name=name, type=target, storage=storage, base_job_template=template))


@dataclass
class MockedPreviews:
    """The resources of every preview made so far, one list per preview."""

    previews: list[list[ResourceChange]] = field(default_factory=list)


@dataclass(frozen=True)
class PreviewedRun:
    """What a submit returns here: done at once, its result the ``Plan`` of the run it stands for."""

    plan: Plan

    def result(self, timeout: float | None = None) -> Plan:
        return self.plan

    def done(self) -> bool:
        return True

    def wait_teardown(self, timeout: float | None = None) -> None:
        """Nothing was created, so nothing comes down."""


def _mocked_stack(targets: list[str], seen: MockedPreviews) -> Callable[..., Any]:
    suites = [conformance_suite(target) for target in targets]
    outputs = {key: value for suite in suites for key, value in suite.mock_outputs.items()}
    calls = {key: value for suite in suites for key, value in suite.mock_calls.items()}

    class MockedRunStack:
        """``engine.RunStack`` as ``preview_run`` uses it, with the program run under mocks in this process."""

        def __init__(self, run_id: str, backend_url: str, program: Callable[[], None], **_: Any) -> None:
            self.program = program

        def preview(self) -> list[ResourceChange]:
            run = run_program(self.program, outputs=outputs, calls=calls)
            changes = [ResourceChange(op="create", type=r.type, name=r.name, inputs=_scrub(r.raw)) for r in run.resources]
            seen.previews.append(changes)
            return changes

        def remove_unprovisioned(self) -> None:
            """No stack was made."""

    return MockedRunStack


def _plugins_shown_not_required(packages: Any, who: str, log: Any) -> list[plugins.PluginStatus]:
    return [plugins.status(spec) for spec in plugins.specs_of(packages)]


def _submitter_preview(self: Submitter, fn: Callable[..., Any], *args: Any,
                       job_variables: Mapping[str, Any] | None = None, **kwargs: Any) -> PreviewedRun:
    future = PreviewedRun(self.preview(fn, *args, job_variables=job_variables, **kwargs))
    self.futures.append(future)  # type: ignore[arg-type]
    return future


@contextmanager
def calls_as_mocked_previews(pools: Mapping[str, str], home: Path) -> Iterator[MockedPreviews]:
    """With ``home`` as ``TOOLKIT_HOME`` and ``pools`` (name -> target) registered in it, calls are previews
    under the targets' mocks (see the module's docstring)."""
    seen = MockedPreviews()
    with ExitStack() as patches:
        patches.enter_context(mock.patch.dict("os.environ", {
            "TOOLKIT_HOME": str(home),
            "DOCKER_HOST": f"unix://{home}/no-engine-here",
        }))
        # The engine client is made once per thread: a fresh one, so this thread's earlier client is not used.
        patches.enter_context(mock.patch.object(environment_base, "_clients", threading.local()))
        patches.enter_context(mock.patch.object(preview, "RunStack", _mocked_stack(sorted(set(pools.values())), seen)))
        patches.enter_context(mock.patch.object(plugins, "require", _plugins_shown_not_required))
        patches.enter_context(mock.patch.object(InfraFunction, "__call__", lambda self, *a, **k: self.preview(*a, **k)))
        patches.enter_context(mock.patch.object(InfraFunction, "submit", lambda self, *a, **k: PreviewedRun(self.preview(*a, **k))))
        patches.enter_context(mock.patch.object(Submitter, "submit", _submitter_preview))
        for name, target in pools.items():
            register_pool(name, target)
        yield seen
