"""Checks every remote target makes of the registry its environment image is pulled from.

What a job needs to be *allowed* to pull differs per cloud and lives with
each target's program (an ECR statement in the ECS execution role, an
Artifact Registry grant for the Google service agent that pulls, ACI's
``imageRegistryCredentials``, a Kubernetes pull Secret). What does not differ:
a registry on the caller's loopback can serve only a cluster whose nodes are
this machine, never a cloud service.
"""

from __future__ import annotations

from toolkit.errors import ConfigError
from toolkit.infra.image_registry import ImageRegistry


def refuse_loopback(registry: ImageRegistry, target: str, pool_name: str) -> None:
    """A cloud target's jobs cannot reach a registry on the caller's loopback interface."""
    if registry.loopback:
        raise ConfigError(
            f"pool {pool_name!r} ({target}) pushes environment images to {registry.url!r}, a registry on this "
            f"machine's loopback interface, which {target} jobs cannot reach. Set the pool's image_registry to a "
            "registry the cloud can pull from (e.g. ECR, Artifact Registry or ACR)"
        )
