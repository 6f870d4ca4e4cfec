"""The cluster side of a kubernetes run: API clients, and the platform's primitives.

Identity: a per-run ServiceAccount whose annotations carry the cloud identity
that may use the pool's storage (IRSA's role ARN, GKE workload identity ...),
unless the pool names an existing one, and a Role/RoleBinding that lets it read
exactly the run's own Secret. Secrets: that Secret, holding the run key and
``toolkit.secret`` env values (written from ``pulumi.Output.secret``), which
reach the container only through ``secretKeyRef``. Pull access: a per-run
``kubernetes.io/dockerconfigjson`` Secret with the pool registry's credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from toolkit.bundles import RUN_KEY_ENV
from toolkit.errors import TargetUnavailableError
from toolkit.infra.flow import Platform, PullAccess, SecretReferences
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.run import RunContext
from toolkit.targets.kubernetes.models import KubernetesJob

RUN_KEY_DATA = "run-key"
PULL_SECRET_SUFFIX = "-pull"
"""The per-run ``kubernetes.io/dockerconfigjson`` Secret holding the pool registry's credentials."""


def run_name(run_id: str) -> str:
    """The name of everything a run makes in the cluster (Job, Secret, ServiceAccount, Role ...)."""
    return f"toolkit-{run_id}"


class KubernetesPlatform(Platform):
    """A cluster (the job's ``context``) and the run's namespace."""

    def __init__(self, run: RunContext) -> None:
        job = run.job
        assert isinstance(job, KubernetesJob)
        self._run = run
        self._job = job
        self.name = run_name(run.run_id)
        self.provider = k8s.Provider("cluster", context=job.context)
        self._in_cluster = pulumi.ResourceOptions(provider=self.provider)
        self._made: list[pulumi.Resource] = []

    def _metadata(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.name, "namespace": self._job.namespace, "labels": self._run.labels, **extra}

    def identity(self) -> str:
        """The ServiceAccount the pod runs as, which may read exactly the run's Secret."""
        account = self._job.pod_spec.get("serviceAccountName")
        if not account:
            account = self.name
            self._made.append(
                k8s.core.v1.ServiceAccount(
                    "service-account",
                    metadata=self._metadata(annotations=self._job.service_account_annotations),
                    automount_service_account_token=False,
                    opts=self._in_cluster,
                )
            )
        role = k8s.rbac.v1.Role(
            "run-role",
            metadata=self._metadata(),
            rules=[{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [self.name], "verbs": ["get"]}],
            opts=self._in_cluster,
        )
        self._made.append(
            k8s.rbac.v1.RoleBinding(
                "run-role-binding",
                metadata=self._metadata(),
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.name},
                subjects=[{"kind": "ServiceAccount", "name": account, "namespace": self._job.namespace}],
                opts=pulumi.ResourceOptions(provider=self.provider, depends_on=[role]),
            )
        )
        return account

    def job_needs(self) -> list[pulumi.Resource]:
        return self._made

    def secret_references(self, values: Mapping[str, str], identity: Any) -> SecretReferences:
        """One Secret named after the run; each value as a ``secretKeyRef`` to its key."""
        keys = {name: RUN_KEY_DATA if name == RUN_KEY_ENV else f"env.{name}" for name in values}
        secret = k8s.core.v1.Secret(
            "run-secret",
            metadata=self._metadata(),
            type="Opaque",
            string_data={keys[name]: pulumi.Output.secret(value) for name, value in values.items()},
            opts=self._in_cluster,
        )
        references = {name: {"secretKeyRef": {"name": self.name, "key": key}} for name, key in keys.items()}
        return SecretReferences(references, [secret])

    def pull_access(self, registry: ImageRegistry, identity: Any) -> PullAccess:
        """The pool registry's credentials as the run's pull Secret (none for a registry without them)."""
        if not registry.has_credentials:
            return PullAccess()
        secret = k8s.core.v1.Secret(
            "pull-secret",
            metadata=self._metadata(name=self.name + PULL_SECRET_SUFFIX),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": pulumi.Output.secret(registry.dockerconfigjson())},
            opts=self._in_cluster,
        )
        return PullAccess(self.name + PULL_SECRET_SUFFIX, [secret])


def connect(context: str | None) -> tuple[Any, Any]:
    """CoreV1Api and BatchV1Api for ``context`` of the kubeconfig, or the in-cluster config."""
    from kubernetes import client, config

    configuration = _configuration()
    try:  # KUBECONFIG is read now, not when the kubernetes package was imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), context=context,
                                client_configuration=configuration)
    except config.ConfigException as exc:
        if context:
            raise TargetUnavailableError(
                f"kubeconfig context {context!r} cannot be loaded ({exc}). Check KUBECONFIG and "
                "`kubectl config get-contexts`"
            ) from None
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            raise TargetUnavailableError(
                f"no Kubernetes cluster is configured ({exc}). Set KUBECONFIG or the 'context' job variable"
            ) from None
    api = client.ApiClient(configuration)
    return client.CoreV1Api(api), client.BatchV1Api(api)


def _configuration() -> Any:
    """A client configuration that bypasses ``HTTPS_PROXY`` for the hosts in ``NO_PROXY``.

    The kubernetes package (35.0.0) reads NO_PROXY in ``Configuration()`` and
    then resets it to None, so a cluster listed there was still dialled
    through the proxy; set it again, before the client's connection pool is made.
    """
    from kubernetes import client

    configuration = client.Configuration()
    if configuration.no_proxy is None:
        configuration.no_proxy = os.environ.get("no_proxy") or os.environ.get("NO_PROXY")
    return configuration
