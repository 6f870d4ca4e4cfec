"""The preview shown on each target's page (docs/targets/previews/<target>.txt).

Local targets (process, docker) are previewed for real: ``.preview()`` of a small function on the
built-in pool, through the Pulumi engine. The others run their real Pulumi program under the
project's mocks (``pulumi.runtime.set_mocks``, with the sample job variables of their conformance
tests in ``tests/infra``) and print the ``Plan`` a preview would show for those resources.
tests/test_docs.py checks that the mocked ones still match the program; the real ones carry a run
id and the local paths of the machine that made them, so they are rewritten by hand:

    python -m tests.docs_previews              # every target (the engine and Docker for the local ones)
    python -m tests.docs_previews ecs ...      # some
    python -m tests.docs_previews --mocks      # every target under mocks (no engine, no Docker)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any
from unittest import mock

from toolkit.infra import flow
from toolkit.plan import Plan, ResourceChange, _scrub

PREVIEWS = Path(__file__).resolve().parents[1] / "docs" / "targets" / "previews"
SUITES = {
    "process": "tests.infra.test_process:TestProcessTarget",
    "docker": "tests.infra.test_docker:TestDockerTarget",
    "kubernetes": "tests.infra.test_kubernetes:TestKubernetesTarget",
    "ecs": "tests.infra.test_ecs:TestEcsTarget",
    "cloud_run": "tests.infra.test_cloud_run:TestCloudRunTarget",
    "vertex_ai": "tests.infra.test_vertex_ai:TestVertexAiTarget",
    "azure_container_instance": "tests.infra.test_azure_container_instance:TestAzureContainerInstanceTarget",
}
"""Target -> the conformance test class whose sample variables and mock outputs its preview uses."""
LOCAL = ("process", "docker")
MOCKED = [target for target in SUITES if target not in LOCAL]


def conformance_suite(target: str) -> Any:
    """The target's conformance test (tests/infra): its sample job variables and mock outputs."""
    import importlib

    module_name, _, class_name = SUITES[target].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def mocked_preview(target: str) -> str:
    """``str(Plan)`` of the target's program under mocks, for its conformance test's sample call."""
    suite = conformance_suite(target)
    config, _ = suite.render(suite.sample())
    with mock.patch.object(flow, "sign_run", lambda *_args, **_kwargs: None):  # whatever credentials this machine has
        run = suite.program(suite.sample())
    # The mocks record resources in the order their inputs resolve, which varies: the page lists them by type.
    resources = sorted(run.resources, key=lambda r: (r.type, r.name))
    changes = [ResourceChange(op="create", type=r.type, name=r.name, inputs=_scrub(r.raw)) for r in resources]
    plan = Plan(run_id=suite.run_id, pool="test-pool", target=target, function="train", job=_scrub(config),
                changes=changes)
    return str(plan) + "\n"


def train(epochs: int) -> float:
    return epochs * 0.1


def real_preview(target: str) -> str:
    """``str(fn.preview(...))`` of ``train`` on the target's built-in pool (engine and Docker), with this
    machine's paths written as a reader's."""
    import toolkit

    decorated = getattr(toolkit, target)(env={"MODE": "fast", "API_TOKEN": toolkit.secret("not-shown")})(train)
    text = str(decorated.preview(3)).replace(str(PREVIEWS.parents[2]), "/path/to/checkout")
    return re.sub(re.escape(str(Path.home())), "~", text) + "\n"


def main(targets: list[str]) -> None:
    mocks_only = "--mocks" in targets
    for target in [name for name in targets if name != "--mocks"] or list(SUITES):
        text = real_preview(target) if target in LOCAL and not mocks_only else mocked_preview(target)
        (PREVIEWS / f"{target}.txt").write_text(text)
        print(f"{target}: {len(text.splitlines())} lines", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
