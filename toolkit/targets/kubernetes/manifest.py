"""A run's Job manifest: the pool's, completed with names, labels, identity, the runner and its env.

A map is an Indexed Job (``_index``): one completion per item, its index in
``INDEX_ENV``; each item's pod is retried on its own (``backoffLimitPerIndex``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from toolkit.bundles import RUN_KEY_ENV, STORAGE_OPTIONS_ENV
from toolkit.infra.flow import JobParts
from toolkit.infra.run import RunContext
from toolkit.secretvalues import Secret
from toolkit.targets.kubernetes.models import KubernetesJob

SKIP_AWAIT = "pulumi.com/skipAwait"
DELETION_POLICY = "pulumi.com/deletionPropagationPolicy"
"""Foreground: destroying the Job deletes its pods first, so a cancelled run stops running."""
INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Where an Indexed Job's pod finds its completion index: the map item it runs."""


def _container_env(job: KubernetesJob, run: RunContext, secrets: dict[str, Any]) -> list[dict[str, Any]]:
    """The runner's environment: plain values inline, secrets only as ``secretKeyRef`` (``secrets``: the run's,
    by env name; ``secret_env``: existing Secrets the pool names)."""
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": secrets[name]} if isinstance(value, Secret) else {"name": name, "value": value}
        for name, value in job.env.items()
    ]
    for name, ref in job.secret_env.items():
        secret, _, key = ref.partition("/")
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    env.append({"name": STORAGE_OPTIONS_ENV, "value": json.dumps(run.storage_options, sort_keys=True)})
    env.append({"name": RUN_KEY_ENV, "valueFrom": secrets[RUN_KEY_ENV]})
    return env


def run_manifest(job: KubernetesJob, run: RunContext, parts: JobParts, name: str) -> dict[str, Any]:
    """The pool's Job manifest completed for this run: names, labels, identity, image, runner command, env."""
    manifest = copy.deepcopy(job.job_manifest)
    metadata = manifest.setdefault("metadata", {})
    metadata.setdefault("name", name)
    metadata["namespace"] = job.namespace
    metadata["labels"] = {**metadata.get("labels", {}), **run.labels}
    metadata["annotations"] = {**metadata.get("annotations", {}), SKIP_AWAIT: "true", DELETION_POLICY: "foreground"}
    template = manifest["spec"]["template"]
    template_metadata = template.setdefault("metadata", {})
    template_metadata["labels"] = {**template_metadata.get("labels", {}), **run.labels}
    pod = template["spec"]
    pod["serviceAccountName"] = parts.identity
    pull_secrets = [*job.image_pull_secrets, *([parts.pull] if parts.pull else [])]
    if pull_secrets:
        pod["imagePullSecrets"] = [*pod.get("imagePullSecrets", []), *({"name": n} for n in pull_secrets)]
    runner = pod["containers"][0]
    if parts.image:  # the call's environment, pushed to the pool's registry: pulled by digest
        runner["image"] = parts.image
    runner["command"] = parts.form.command(run.storage_url, job.python)
    runner["env"] = [*runner.get("env", []), *_container_env(job, run, parts.secrets)]
    if run.fanout is not None:
        _index(manifest["spec"], run.fanout.count, run.fanout.parallelism)
    return manifest


def _index(spec: dict[str, Any], count: int, parallelism: int) -> None:
    """A map's Job: Indexed, one completion per item, ``parallelism`` pods at once.

    The Job's ``backoffLimit`` becomes ``backoffLimitPerIndex``: an item whose pod
    died of an infrastructure failure is retried on its own, and a failed item
    does not stop the others (the Job ends once every index succeeded or failed).
    """
    spec["completionMode"] = "Indexed"
    spec["completions"] = count
    spec["parallelism"] = parallelism
    spec["backoffLimitPerIndex"] = int(spec.pop("backoffLimit", 0) or 0)
