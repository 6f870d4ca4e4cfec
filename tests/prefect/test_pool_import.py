"""``toolkit pool import`` of the real collections' templates, Prefect names and units, synonyms in "did you mean".

The templates under ``toolkit/prefect/templates`` were dumped from the real
Prefect packages (``tests/prefect/dump_templates.py``; versions in
``versions.json``). Each imports with a report; the pool it makes previews a
run: for real through the engine for process and docker, for the cloud
targets (whose provider plugins cannot run here) by the same ``prepare`` and
the target's Pulumi program under mocks.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.mocking import run_program
from tests.infra.test_azure_container_instance import TestAzureContainerInstanceTarget as _Aci
from tests.infra.test_cloud_run import TestCloudRunTarget as _CloudRun
from tests.infra.test_ecs import TestEcsTarget as _Ecs
from tests.infra.test_kubernetes import TestKubernetesTarget as _Kubernetes
from tests.infra.test_vertex_ai import TestVertexAiTarget as _VertexAi
from toolkit import preparation
from toolkit.errors import ConfigError
from toolkit.infra.registry import get_target_class
from toolkit.pools.registry import PoolRegistry
from toolkit.prefect.infrastructure import prefect_variables
from toolkit.prefect.pool_import import PREFECT_TYPES, LossyImportError, import_pool, reference_versions
from toolkit.preparation import prepare

TEMPLATES = Path(__file__).resolve().parents[2] / "toolkit" / "prefect" / "templates"
CLOUD_VARIABLES: dict[str, dict[str, Any]] = {
    "kubernetes": {"image": "registry.example/runner:1"},
    "ecs": {"image": "registry.example/runner:1", "subnets": ["subnet-0abc"]},
    "cloud_run": {"image": "us-docker.pkg.dev/p/r/runner:1", "project": "proj"},
    "vertex_ai": {"image": "us-docker.pkg.dev/p/r/runner:1", "project": "proj"},
    "azure_container_instance": {"image": "reg.azurecr.io/runner:1", "resource_group": "rg", "subscription": "00000000-0000-0000-0000-000000000000"},
}
MOCK_OUTPUTS = {
    case.target_cls.name: case.mock_outputs for case in (_Aci, _CloudRun, _Ecs, _Kubernetes, _VertexAi)
}
"""What the conformance tests' mocks answer for each cloud target's resources (ARNs, ids)."""
MOCK_CALLS = {case.target_cls.name: case.mock_calls for case in (_Aci, _CloudRun, _Ecs, _Kubernetes, _VertexAi)}
"""... and for its provider functions (ACI's storage account keys, which a single call's requests are signed with)."""
STORAGE = {"kubernetes": "s3://pool-bucket/runs", "ecs": "s3://pool-bucket/runs"}


def template(prefect_type: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / f"{prefect_type}.json").read_text())


def double(x: int) -> int:
    return 2 * x


def test_every_template_records_the_package_versions_it_came_from() -> None:
    versions = reference_versions()
    assert set(versions) == set(PREFECT_TYPES)
    for prefect_type, entry in versions.items():
        assert entry["prefect"] == "3.9.1"
        assert (TEMPLATES / f"{prefect_type}.json").is_file()


@pytest.mark.parametrize("prefect_type", [
    # A cloud pool's preview plans the run's environment, which asks the Docker engine for the base image.
    prefect_type if PREFECT_TYPES[prefect_type] in ("process", "docker") else pytest.param(prefect_type, marks=pytest.mark.docker)
    for prefect_type in sorted(PREFECT_TYPES)
])
def test_collection_template_imports_with_a_report_and_the_pool_previews_a_run(
    prefect_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"imported-{prefect_type}"
    pool, report = import_pool(
        json.dumps(template(prefect_type)), name, f"{prefect_type}.json", storage=STORAGE.get(PREFECT_TYPES[prefect_type])
    )
    assert report.lost == [] and pool.type == PREFECT_TYPES[prefect_type]
    mapped = {row.name: row for row in report.variables}
    assert set(mapped) == set(template(prefect_type)["variables"]["properties"]), "every variable is reported"
    assert {row.outcome for row in report.variables} <= {"as is", "renamed", "combined", "not supported"}
    assert all(row.note for row in report.variables if row.outcome == "not supported")
    PoolRegistry().save(pool, overwrite=True)
    target = get_target_class(pool.type)
    if pool.type in ("process", "docker"):
        return  # previewed for real in test_imported_local_pools_preview_for_real
    # The program runs under Pulumi mocks, which load no provider plugin: the check that a real call
    # meets first (the aws, gcp and azure-native plugins cannot be built or downloaded here) is skipped.
    monkeypatch.setattr(preparation.plugins, "require", lambda *args: [])
    prepared = prepare(double, (21,), {}, name, [CLOUD_VARIABLES[pool.type]])
    try:
        run = run_program(
            lambda: target().program(prepared.context), outputs=MOCK_OUTPUTS[pool.type], calls=MOCK_CALLS[pool.type]
        )
    finally:
        prepared.discard_bundle()
    assert run.resources, f"the {pool.type} program registered nothing"


@pytest.mark.engine
@pytest.mark.parametrize("prefect_type", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_imported_local_pools_preview_for_real(prefect_type: str) -> None:
    from toolkit.decorators import InfraFunction

    name = f"imported-real-{prefect_type}"
    pool, _ = import_pool(json.dumps(template(prefect_type)), name, f"{prefect_type}.json")
    PoolRegistry().save(pool, overwrite=True)
    plan = InfraFunction(double, pool.type, name).preview(21)
    assert plan.pool == name and plan.changes


@pytest.mark.engine  # the kubernetes provider plugin must be present (or downloaded through the CLI)
@pytest.mark.docker  # the environment's plan asks the Docker engine for the base image
def test_kubernetes_manifest_additions_become_customizations_and_render() -> None:
    changed = template("kubernetes")
    spec = changed["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    spec["nodeSelector"] = {"pool": "gpu"}
    changed["variables"]["properties"]["memory_limit"]["default"] = "8Gi"
    changed["variables"]["properties"]["finished_job_ttl"]["default"] = 120
    pool, report = import_pool(json.dumps(changed), "k8s-gpu", "k8s.json", storage=STORAGE["kubernetes"])
    assert [s.outcome for s in report.settings] == ["customization"]
    rows = {row.name: row for row in report.variables}
    assert (rows["memory_limit"].outcome, rows["memory_limit"].ours) == ("renamed", "memory")
    assert rows["finished_job_ttl"].ours == "ttl_seconds_after_finished"
    PoolRegistry().save(pool, overwrite=True)
    prepared = prepare(double, (1,), {}, "k8s-gpu", [CLOUD_VARIABLES["kubernetes"]])
    prepared.discard_bundle()
    manifest = prepared.job_config["job_manifest"]
    assert manifest["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 120
    assert prepared.variables["memory"] == "8Gi"


def test_a_setting_that_cannot_be_carried_over_is_refused_unless_allowed() -> None:
    changed = template("docker")
    changed["variables"]["properties"]["container_create_kwargs"]["default"] = {"shm_size": "1g"}
    changed["job_configuration"]["extra_hosts"] = {"db": "10.0.0.5"}
    with pytest.raises(LossyImportError) as info:
        import_pool(json.dumps(changed), "lossy", "docker.json", prefect_type="docker")
    assert info.value.report.lost == ["container_create_kwargs", "/extra_hosts"]
    assert "--allow-lossy" in str(info.value)
    pool, report = import_pool(json.dumps(changed), "lossy", "docker.json", prefect_type="docker", allow_lossy=True)
    assert pool.type == "docker" and report.lost


def test_unsupported_variable_at_its_collection_default_loses_nothing() -> None:
    _, report = import_pool(json.dumps(template("kubernetes")), "k", "k.json", storage=STORAGE["kubernetes"])
    rows = {row.name: row for row in report.variables}
    assert rows["pod_watch_timeout_seconds"].outcome == "not supported"
    assert rows["pod_watch_timeout_seconds"].default == 60 and not rows["pod_watch_timeout_seconds"].lost


def test_work_pool_inspect_output_brings_type_and_bundle_storage() -> None:
    inspected = {
        "name": "olympic",
        "type": "kubernetes",
        "base_job_template": template("kubernetes"),
        "storage_configuration": {
            "bundle_upload_step": {"prefect_aws.experimental.bundles.upload": {"bucket": "team-bundles"}}
        },
    }
    pool, report = import_pool(json.dumps(inspected), "olympic", "inspect.json")
    assert report.prefect_type == "kubernetes" and pool.storage.url == "s3://team-bundles"


def test_a_bare_template_of_unknown_shape_asks_for_the_type() -> None:
    odd = {"job_configuration": {"something": "{{ x }}"}, "variables": {"properties": {"x": {"type": "string"}}}}
    with pytest.raises(ConfigError, match="pass --type"):
        import_pool(json.dumps(odd), "odd", "odd.json")


def test_cli_dry_run_prints_the_report_and_creates_nothing(tmp_path: Path) -> None:
    source = tmp_path / "cloud-run-v2.json"
    source.write_text(json.dumps(template("cloud-run-v2")))
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "pool", "import", str(source), "--name", "cr", "--dry-run"],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "renamed              vpc_connector_name -> vpc_connector" in done.stdout
    assert "not supported        keep_job = False  (a run's job is always deleted at teardown)" in done.stdout
    assert "not created" in done.stderr and not PoolRegistry().exists("cr")


def test_cli_refuses_lossy_then_imports_with_allow_lossy(tmp_path: Path) -> None:
    changed = template("ecs")
    changed["variables"]["properties"]["vpc_id"]["default"] = "vpc-123"
    source = tmp_path / "ecs.json"
    source.write_text(json.dumps(changed))
    command = [sys.executable, "-m", "toolkit", "pool", "import", str(source), "--name", "ecs-imported", "--json"]
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 1 and "vpc_id" in refused.stderr
    assert json.loads(refused.stdout)["lost"] == ["vpc_id"]
    done = subprocess.run([*command, "--allow-lossy", "--storage", "s3://b/runs"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert PoolRegistry().get("ecs-imported").storage.url == "s3://b/runs"


# -- Prefect's names and units per call --------------------------------------------------


@pytest.mark.parametrize(
    ("target", "given", "expected"),
    [
        ("kubernetes", {"memory": 64000}, {"memory": "64000Mi"}),
        ("kubernetes", {"memory_limit": "8Gi", "cpu_limit": 2}, {"memory": "8Gi", "cpu": "2"}),
        ("kubernetes", {"finished_job_ttl": 60}, {"ttl_seconds_after_finished": 60}),
        ("ecs", {"cpu": "1 vCPU", "memory": "2 GB"}, {"cpu": 1024, "memory": 2048}),
        ("ecs", {"cpu": 512, "memory": 1024, "labels": {"team": "a"}}, {"cpu": 512, "memory": 1024, "tags": {"team": "a"}}),
        ("ecs", {"prefect_api_key_secret_arn": "arn:aws:secretsmanager:k"},
         {"secrets": {"PREFECT_API_KEY": "arn:aws:secretsmanager:k"}}),
        ("cloud_run", {"memory": 4, "memory_unit": "Gi", "cpu": 2}, {"memory": "4Gi", "cpu": "2000m"}),
        ("cloud_run", {"memory": 512}, {"memory": "512Mi"}),
        ("cloud_run", {"env_from_secrets": {"DB": {"secret": "db-pass", "version": "3"}}}, {"secrets": {"DB": "db-pass:3"}}),
        ("azure_container_instance", {"resource_group_name": "rg", "memory": 2.0}, {"resource_group": "rg", "memory": 2.0}),
        ("docker", {"memory": "1g"}, {"mem_limit": "1g"}),
    ],
)
def test_prefect_names_and_units_translate(target: str, given: dict[str, Any], expected: dict[str, Any]) -> None:
    assert prefect_variables(target, copy.deepcopy(given)) == expected


def test_a_prefect_name_without_counterpart_says_why() -> None:
    with pytest.raises(ConfigError, match="'cluster_config' has no counterpart here: a Prefect block"):
        prefect_variables("kubernetes", {"cluster_config": {"context_name": "x"}})
    with pytest.raises(ConfigError, match="'memory' and 'memory_limit' both set 'memory'"):
        prefect_variables("kubernetes", {"memory": 1, "memory_limit": "1Gi"})
    with pytest.raises(ConfigError, match="needs 'memory' alongside"):
        prefect_variables("cloud_run", {"memory_unit": "Gi"})


@pytest.mark.parametrize(
    ("given", "suggested"),
    [("memory", "mem_limit"), ("cpu", "cpus"), ("memroy", "mem_limit"), ("gpu", "gpus")],
)
def test_did_you_mean_covers_synonyms_on_docker(given: str, suggested: str) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(double, (1,), {}, "local-docker", [{given: "1"}], "docker")
    assert f"unknown job variable {given!r}" in str(info.value)
    assert f"Did you mean {suggested!r}?" in str(info.value)


def test_did_you_mean_says_when_nothing_corresponds() -> None:
    with pytest.raises(ConfigError) as info:
        prepare(double, (1,), {}, "local-docker", [{"container_create_kwargs": {}}], "docker")
    assert "'container_create_kwargs' has no counterpart here" in str(info.value)
