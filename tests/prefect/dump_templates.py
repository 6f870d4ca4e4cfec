"""Dump the default base job templates of the real Prefect collections into ``toolkit/prefect/templates``.

    <venv with prefect and its collections>/bin/python -m tests.prefect.dump_templates

``toolkit pool import`` compares an imported template with these (a setting
that differs from the collection's default is one a platform team made), and
the tests import each of them. ``versions.json`` records the package versions
they came from; rerun this after upgrading a collection.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "toolkit" / "prefect" / "templates"
WORKERS = {
    # Prefect work pool type -> (distribution, "module:WorkerClass")
    "process": ("prefect", "prefect.workers.process:ProcessWorker"),
    "docker": ("prefect-docker", "prefect_docker.worker:DockerWorker"),
    "kubernetes": ("prefect-kubernetes", "prefect_kubernetes.worker:KubernetesWorker"),
    "ecs": ("prefect-aws", "prefect_aws.workers.ecs_worker:ECSWorker"),
    "cloud-run": ("prefect-gcp", "prefect_gcp.workers.cloud_run:CloudRunWorker"),
    "cloud-run-v2": ("prefect-gcp", "prefect_gcp.workers.cloud_run_v2:CloudRunWorkerV2"),
    "vertex-ai": ("prefect-gcp", "prefect_gcp.workers.vertex:VertexAIWorker"),
    "azure-container-instance": ("prefect-azure", "prefect_azure.workers.container_instance:AzureContainerWorker"),
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    versions: dict[str, dict[str, str]] = {}
    for pool_type, (distribution, path) in WORKERS.items():
        module, _, name = path.partition(":")
        worker = getattr(importlib.import_module(module), name)
        if worker.type != pool_type:
            raise SystemExit(f"{path} declares work pool type {worker.type!r}, expected {pool_type!r}")
        template = worker.get_default_base_job_template()
        (OUT / f"{pool_type}.json").write_text(json.dumps(template, indent=2, sort_keys=True) + "\n")
        versions[pool_type] = {
            "worker": path,
            distribution: metadata.version(distribution),
            "prefect": metadata.version("prefect"),
        }
        print(f"{pool_type:<26} {distribution} {metadata.version(distribution)}")
    (OUT / "versions.json").write_text(json.dumps(versions, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
