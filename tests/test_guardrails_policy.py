"""Policy packs on run stacks, through the real engine: the example pack on a Docker pool.

A mandatory violation stops the call before any resource exists (watched in
the backend's checkpoint files while the call runs), advisory ones warn and
the call goes on, previews list every verdict, and a pack published with the
pools project is enforced from the registry.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left
from tests.pulumi_cli import PulumiCli, make_cli
from toolkit import docker, process, settings
from toolkit.backend_store import BackendStore
from toolkit.errors import PolicyViolationError
from toolkit.futures import wait_for_teardowns
from toolkit.guardrails import history
from toolkit.pools.as_code import template_with_defaults
from toolkit.pools.registry import PoolRegistry, WorkPool

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PACK = REPO / "examples" / "policy_pack"
POOL = "guarded-docker"


class BackendWatch:
    """Polls the backend's run-stack checkpoints while a call runs: the most resources any ever held."""

    def __init__(self) -> None:
        self.directory = Path(settings.default_backend_url().removeprefix("file://")) / ".pulumi" / "stacks"
        self.stacks: set[str] = set()
        self.most_resources = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for path in (self.directory / settings.RUN_PROJECT).glob("run-*.json"):
                self.stacks.add(path.stem)
                try:
                    latest = json.loads(path.read_text()).get("checkpoint", {}).get("latest") or {}
                except (OSError, ValueError):
                    continue  # removed or being written
                self.most_resources = max(self.most_resources, len(latest.get("resources") or []))
            time.sleep(0.01)

    def __enter__(self) -> BackendWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def guarded_pool():
    template = template_with_defaults("docker", mem_limit="256m")
    PoolRegistry().save(
        WorkPool(name=POOL, type="docker", base_job_template=template, policy_packs=[str(EXAMPLE_PACK)]),
        overwrite=True,
    )
    yield POOL
    PoolRegistry().delete(POOL)


@docker(pool=POOL)
def add_one(x: int) -> int:
    return x + 1


def _containers_of(run_id: str) -> list[str]:
    found = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=toolkit-run={run_id}"],
                           capture_output=True, text=True, check=True)
    return found.stdout.split()


@pytest.mark.docker
def test_privileged_call_is_stopped_before_any_resource_exists(guarded_pool):
    with BackendWatch() as watch:
        with pytest.raises(PolicyViolationError) as info:
            add_one.with_options(privileged=True, labels={"team": "ml"})(1)
    message = str(info.value)
    assert "before anything was created" in message
    assert "toolkit-guardrails/no-privileged-containers on docker:index/container:Container 'job'" in message
    assert "Containers must not run privileged" in message
    run_id = message.split()[1]
    assert f"run-{run_id}" in watch.stacks  # the stack existed and was watched...
    assert watch.most_resources == 0  # ...and never held a resource
    assert _containers_of(run_id) == []
    wait_for_teardowns()
    entry = next(e for e in history.entries(BackendStore(settings.default_backend_url())) if e.run_id == run_id)
    assert (entry.outcome, entry.resources) == ("rejected", 0)
    assert_nothing_left()


@pytest.mark.docker
def test_image_outside_the_allowed_registry_is_stopped(guarded_pool):
    outside = "guardrails-outside:1"
    subprocess.run(["docker", "tag", settings.runner_image(), outside], check=True)
    try:
        with pytest.raises(PolicyViolationError, match=r"allowed-image-registry .*Image 'guardrails-outside:1' is "
                                                       r"not from an allowed registry"):
            add_one.with_options(image=outside, labels={"team": "ml"})(1)
    finally:
        subprocess.run(["docker", "rmi", outside], check=True, capture_output=True)
    wait_for_teardowns()
    assert_nothing_left()


@pytest.mark.docker
def test_advisory_violation_warns_and_the_call_succeeds(guarded_pool, capfd):
    with BackendWatch() as watch:
        future = add_one.submit(41)  # no 'team' label: the advisory required-labels policy
        assert future.result(timeout=300) == 42
        wait_for_teardowns()
    assert watch.most_resources > 0  # the watch does see resources of a run that goes up
    warning = ("warning: policy [advisory] toolkit-guardrails/required-labels on docker:index/container:Container "
               "'job': Missing labels team")
    assert warning in capfd.readouterr().err  # shown even with TOOLKIT_PROGRESS=0
    assert [(r.policy, r.enforcement) for r in future.policy_results] == [("required-labels", "advisory")]
    assert_nothing_left()


@pytest.mark.docker
def test_preview_lists_policy_results_and_whether_the_call_is_allowed(guarded_pool):
    blocked = add_one.with_options(privileged=True, mem_limit="8g").preview(1)
    assert not blocked.allowed
    verdicts = {(r.policy, r.enforcement, r.resource) for r in blocked.policy_results}
    assert verdicts == {
        ("no-privileged-containers", "mandatory", "job"),
        ("memory-limit", "mandatory", "job"),
        ("required-labels", "advisory", "job"),
    }
    text = str(blocked)
    assert "Policies (1 pack(s)): BLOCKED" in text and "Memory limit 8192 MB is above the pool's maximum of 4096 MB" in text
    assert json.loads(blocked.to_json())["allowed"] is False

    allowed = add_one.with_options(labels={"team": "ml"}).preview(1)
    assert allowed.allowed and allowed.policy_results == []
    assert "Policies (1 pack(s)): passed" in str(allowed)
    assert_nothing_left()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> PulumiCli:
    return make_cli(tmp_path_factory.mktemp("published-pack"))


PROJECT = """
import pulumi
from toolkit.pools.as_code import PolicyPackResource, WorkPoolResource

pack = PolicyPackResource("team-guardrails", directory="policies")
WorkPoolResource("published-guarded", type="process", policy_packs=[pack.reference], max_concurrent_runs=4,
                 opts=pulumi.ResourceOptions(depends_on=[pack]))
"""

LOCAL_PROCESS_PACK = """
from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy

def no_long_jobs(args, report_violation):
    if args.resource_type == "toolkit:index:LocalProcess" and "SLOW" in dict(args.props.get("env") or {}):
        report_violation("SLOW jobs are not allowed on this pool.")

PolicyPack(name="team-guardrails", enforcement_level=EnforcementLevel.MANDATORY, policies=[
    ResourceValidationPolicy(name="no-slow-jobs", description="No slow jobs.", validate=no_long_jobs),
])
"""


@process(pool="published-guarded")
def double(x: int) -> int:
    return 2 * x


def test_a_pack_published_with_the_pools_project_is_enforced(cli, tmp_path, monkeypatch):
    project = tmp_path / "pools"
    (project / "policies").mkdir(parents=True)
    (project / "Pulumi.yaml").write_text("name: published-pack\nruntime:\n  name: python\n")
    (project / "__main__.py").write_text(PROJECT)
    (project / "policies" / "PulumiPolicy.yaml").write_text("name: team-guardrails\nruntime: python\n")
    (project / "policies" / "__main__.py").write_text(LOCAL_PROCESS_PACK)
    cli.run("stack", "init", "dev", cwd=project)
    cli.run("config", "set", "toolkit:registryUrl", str(tmp_path / "registry"), cwd=project)
    cli.run("up", "--yes", cwd=project)
    assert (tmp_path / "registry" / "policy-packs" / "team-guardrails" / "__main__.py").read_text() == LOCAL_PROCESS_PACK
    monkeypatch.setenv("TOOLKIT_POOLS_URL", str(tmp_path / "registry"))
    pool = PoolRegistry().get("published-guarded")
    assert (pool.policy_packs, pool.max_concurrent_runs) == (["registry:team-guardrails"], 4)

    assert double(21) == 42
    with pytest.raises(PolicyViolationError, match="team-guardrails/no-slow-jobs .* SLOW jobs are not allowed"):
        double.with_options(env={"SLOW": "1"})(1)
    wait_for_teardowns()
    cli.run("destroy", "--yes", cwd=project)
    assert not (tmp_path / "registry" / "policy-packs" / "team-guardrails").exists()
    assert_nothing_left()
