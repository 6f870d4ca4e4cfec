"""A run's Job manifest: the pool's, completed with names, labels, identity, the runner and its env.

A map is an Indexed Job of ``P`` workers (``_workers``): each pod claims items
until none is left, its completion index (``WORKER_ENV``) its worker number.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from toolkit.bundles import STORAGE_OPTIONS_ENV
from toolkit.infra.flow import JobParts
from toolkit.infra.run import RunContext
from toolkit.secretvalues import Secret
from toolkit.targets.kubernetes.models import KubernetesJob

SKIP_AWAIT = "pulumi.com/skipAwait"
DELETION_POLICY = "pulumi.com/deletionPropagationPolicy"
"""Foreground: destroying the Job deletes its pods first, so a cancelled run stops running."""
WORKER_ENV = "JOB_COMPLETION_INDEX"
"""Where an Indexed Job's pod finds its completion index: a map's worker number."""


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
    # The run's own secrets (its key, the storage requests the client signed ...), whatever the flow adds.
    env += [{"name": name, "valueFrom": ref} for name, ref in secrets.items() if name not in job.env]
    return env


def run_manifest(job: KubernetesJob, run: RunContext, parts: JobParts, name: str) -> dict[str, Any]:
    """The pool's Job manifest completed for this run: names, labels, identity, image, runner command, env."""
    manifest = copy.deepcopy(job.job_manifest)
    metadata = manifest.setdefault("metadata", {})
    metadata.setdefault("name", name)
    if run.attempt > 1:  # a map's fresh workers: the Job they replace may still be being deleted under its name
        metadata["name"] = f"{metadata['name']}-{run.attempt}"
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
    worker = None if run.fanout is None else f"$({WORKER_ENV})"  # the kubelet expands it from the pod's env
    runner["command"] = parts.form.command(run.storage_url, job.python, worker=worker, stripe=True)
    runner["env"] = [*runner.get("env", []), *_container_env(job, run, parts.secrets)]
    if run.fanout is not None:
        _workers(manifest["spec"], run.fanout.parallelism)
    return manifest


def _workers(spec: dict[str, Any], parallelism: int) -> None:
    """A map's Job: Indexed, ``parallelism`` completions all at once, one claiming worker each.

    The completion index names the worker, rather than its pod's name: it is the
    same small number in the pod's claims and in the Job's ``failedIndexes``,
    which still says which worker died once its deleted pod has vanished from
    the API, so the client can give that worker's items back to the others.
    No pod is ever replaced (``backoffLimitPerIndex`` 0; the Job's
    ``backoffLimit``, which holds ``retries``, is dropped): an item's ``retries``
    are the engine's, through the claims, and the Job never holds more than
    ``parallelism`` pods. One worker failing does not stop the others.
    """
    spec["completionMode"] = "Indexed"
    spec["completions"] = parallelism
    spec["parallelism"] = parallelism
    spec.pop("backoffLimit", None)
    spec["backoffLimitPerIndex"] = 0
