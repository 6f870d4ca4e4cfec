"""The seed's two examples on the local Kubernetes cluster, with only the import line changed.

The pool is named ``olympic`` as in the seed, so the code is the seed's but
for ``from toolkit.prefect import ...``. Its image is the cluster's plain
runner image and it names a registry (Debian's ``docker-registry`` on
loopback, ``tests/registry.py``): Prefect and whatever else the flow needs
reach the pod the way any package a call uses does, in an environment image
built and pushed by the environment stack and pulled by digest. The flow runs
report to the session's Prefect server, which pods reach on the Docker
bridge's gateway (an address of this host).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.conftest import save_pool
from tests.k8s.layout import ClusterInfo
from tests.prefect.fixtures import PrefectServer, PrefectVenv, run_client
from tests.prefect.seed import FLOW_NAME, SEEDS, seed_script
from tests.registry import shared
from toolkit.decorators import InfraFunction
from toolkit.environments import manage
from toolkit.pools.registry import PoolRegistry
from toolkit.prefect.pool_import import import_pool

pytestmark = [pytest.mark.engine, pytest.mark.k8s, pytest.mark.slow]
TEMPLATES = Path(__file__).resolve().parents[2] / "toolkit" / "prefect" / "templates"

@pytest.fixture
def registry_path() -> Iterator[str]:
    """The open registry and a repository path of this test alone (sessions share the registry)."""
    with shared() as found:
        yield f"{found['open'].host}/tk-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def _prune_environments() -> Iterator[None]:
    """The test's environment (Prefect's image) is pruned: stack, local image and pushed manifest."""
    yield
    failed = [result for result in manage.prune() if result.error]
    assert not failed, f"could not prune environments: {failed}"


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_examples_run_on_the_local_cluster_with_the_import_line_changed(
    seed: str,
    k8s_cluster: ClusterInfo,
    namespace: str,
    registry_path: str,
    _prune_environments: None,
    prefect_venv: PrefectVenv,
    prefect_server: PrefectServer,
    tmp_path: Path,
) -> None:
    # memory=64000 (MiB) is the seed's: it becomes the container's limit (and its request, by default).
    # A request that large fits no node here, so the platform team's pool requests less.
    save_pool("olympic", k8s_cluster, namespace, image_registry=registry_path, memory_request="256Mi")
    before = prefect_server.flow_run_ids(FLOW_NAME)
    import_line = f"from toolkit.prefect import {SEEDS[seed][1]}"
    env = {**prefect_server.env, **k8s_cluster.client_env()}
    for name in ("NO_PROXY", "no_proxy"):  # the API server and S3 emulator, past the sink standing in for a proxy
        env[name] = f"{env[name]},{k8s_cluster.node_ip}"
    run = run_client(prefect_venv, seed_script(seed, import_line, "olympic"), tmp_path, env=env)
    assert run.outcome == {"ok": True}
    assert "hello\n" in run.stdout
    [new] = [run for run in prefect_server.flow_runs(FLOW_NAME) if run["id"] not in before]
    assert new["state_type"] == "COMPLETED", new


def _double(x: int) -> int:
    return 2 * x


def test_the_imported_collection_template_previews_a_run_on_the_cluster(
    k8s_cluster: ClusterInfo, namespace: str
) -> None:
    """``toolkit pool import`` of prefect-kubernetes' default template, previewed for real (the provider
    asks the cluster), with what a platform team fills in: image, namespace, context, storage endpoint."""
    text = (TEMPLATES / "kubernetes.json").read_text()
    pool, report = import_pool(text, "imported-olympic", "kubernetes.json", storage=f"s3://{k8s_cluster.bucket}/{namespace}")
    assert report.lost == []
    defaults = {"image": k8s_cluster.runner_image, "namespace": namespace, "context": k8s_cluster.context}
    for variable, value in defaults.items():
        pool.base_job_template["variables"]["properties"][variable]["default"] = value
    pool.storage.options = {"endpoint_url": k8s_cluster.s3_endpoint}
    PoolRegistry().save(pool, overwrite=True)
    plan = InfraFunction(_double, "kubernetes", pool.name).preview(21)
    jobs = [change for change in plan.changes if change.type == "kubernetes:batch/v1:Job"]
    assert [change.op for change in jobs] == ["create"], plan
    assert jobs[0].inputs["metadata"]["namespace"] == namespace
