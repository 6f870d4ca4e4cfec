"""The Azure family's primitives (azure_container_instance uses them): identity, storage, secrets, pulls.

Per run: a user-assigned identity the job runs as; a storage account
``tkrun<run-id>`` with one private blob container ``run`` holding the bundle,
the identity with Storage Blob Data Contributor on exactly that container (and
the deploying principal with Storage Blob Data Reader on it, so the client
reads the result with its own Azure AD credentials). A pool whose storage is a
shared prefix (``az://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX``) gets
no account: the identity may use only ``<prefix>/<run-id>/`` (an ABAC
condition on its role assignment, in ``storage_resource_group``). Secrets are
``secure_value`` environment variables (never returned by the API), as Pulumi
secrets. Pulling: the pool registry's credentials, or for an ACR an identity
granted AcrPull.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pulumi_azure_native as azure

from toolkit.errors import ConfigError
from toolkit.infra.flow import Bucket, Platform, PullAccess, SecretReferences
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.rest import RestClient, azure_session, endpoint
from toolkit.infra.run import RunContext

MANAGEMENT_ENDPOINT_ENV = "TOOLKIT_AZURE_MANAGEMENT_ENDPOINT"
MANAGEMENT_ENDPOINT = "https://management.azure.com"
CONTAINER = "run"
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def account_name(run_id: str) -> str:
    """Storage account names are 3-24 lowercase letters and digits, globally unique."""
    return f"tkrun{run_id}"


def management_api() -> RestClient:
    base = endpoint(MANAGEMENT_ENDPOINT_ENV, MANAGEMENT_ENDPOINT)
    return RestClient(base, azure_session())


def role_definition(subscription: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "/subscriptions/", subscription, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )


def shared_container(run: RunContext) -> tuple[str, str, str]:
    """``(account, container, prefix)`` of a shared-prefix pool's run storage
    (``az://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX``, or ``az://CONTAINER/PREFIX`` with the
    pool's storage option ``account_name``)."""
    location, _, prefix = run.storage_url.split("://", 1)[-1].partition("/")
    container, _, host = location.partition("@")
    account = host.split(".", 1)[0] if host else str(run.storage_options.get("account_name") or "")
    if not account:
        raise ConfigError(
            f"pool {run.pool_name!r} (azure_container_instance) shares storage {run.storage_url.rsplit('/', 1)[0]!r}, "
            "which names no storage account: use az://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX or set the "
            "pool's storage option account_name"
        )
    return account, container, prefix


class AzurePlatform(Platform):
    """One subscription's provider (the job's ``subscription``, else the caller's) and resource group."""

    def __init__(self, run: RunContext, subscription: str | None, resource_group: str, location: str | None,
                 tags: dict[str, str], settings: Mapping[str, Any]) -> None:
        """``settings``: the job's ``client_principal_type``, ``identities``, ``registry_resource_group`` and
        ``storage_resource_group``."""
        if run.shared_storage:
            shared_container(run)  # names its account, before anything is registered
        self._run = run
        self.provider = azure.Provider("azure", subscription_id=subscription) if subscription else None
        self.opts = pulumi.ResourceOptions(provider=self.provider)
        self._client = azure.authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(provider=self.provider)
        )
        self.subscription: pulumi.Input[str] = subscription or self._client.subscription_id
        self.resource_group = resource_group
        self._location = location
        self.tags = tags
        self._settings = settings

    def grant(self, logical: str, principal: pulumi.Input[str], role: str, scope: pulumi.Input[str],
              principal_type: str = "ServicePrincipal", **condition: Any) -> pulumi.Resource:
        return azure.authorization.RoleAssignment(
            logical, principal_id=principal, principal_type=principal_type,
            role_definition_id=role_definition(self.subscription, role), scope=scope, opts=self.opts, **condition,
        )

    def identity(self) -> azure.managedidentity.UserAssignedIdentity:
        return azure.managedidentity.UserAssignedIdentity(
            "job-identity",
            resource_name_=f"toolkit-run-{self._run.run_id}",
            resource_group_name=self.resource_group,
            location=self._location,
            tags=self.tags,
            opts=self.opts,
        )

    def bucket(self, identity: azure.managedidentity.UserAssignedIdentity) -> Bucket:
        """The run's own account and container; the job's identity and the client may use exactly that
        container. A map's items are uploaded with the account's key: the client's own access may not
        have reached the data plane yet."""
        account = azure.storage.StorageAccount(
            "storage",
            account_name=account_name(self._run.run_id),
            resource_group_name=self.resource_group,
            location=self._location,
            kind="StorageV2",
            sku={"name": "Standard_LRS"},
            allow_blob_public_access=False,
            minimum_tls_version="TLS1_2",
            enable_https_traffic_only=True,
            tags=self.tags,
            opts=self.opts,
        )
        container = azure.storage.BlobContainer(
            "container", account_name=account.name, resource_group_name=self.resource_group,
            container_name=CONTAINER, public_access="None", opts=self.opts,
        )

        def upload(logical: str, key: str, path: Path) -> pulumi.Resource:
            return azure.storage.Blob(
                logical, account_name=account.name, resource_group_name=self.resource_group,
                container_name=container.name, blob_name=key, type="Block", source=pulumi.FileAsset(str(path)),
                opts=self.opts,
            )

        grants = [
            self.grant("job-blob-access", identity.principal_id, BLOB_DATA_CONTRIBUTOR, container.id),
            self.grant("client-blob-read", self._client.object_id, BLOB_DATA_READER, container.id,
                       principal_type=self._settings["client_principal_type"]),
        ]
        keyed = self._account_options(account)
        single = self._run.fanout is None
        return Bucket(container, upload, guards=[container, *grants], items_options=None if single else keyed,
                      signing_options=keyed if single else None)

    def _account_options(self, account: azure.storage.StorageAccount) -> pulumi.Output[dict[str, str]]:
        """The account's name and key (a secret): a map's items are uploaded with them, a single call's requests
        signed with them."""
        keys = azure.storage.list_storage_account_keys_output(
            resource_group_name=self.resource_group, account_name=account.name,
            opts=pulumi.InvokeOutputOptions(provider=self.provider),
        )
        return pulumi.Output.secret(
            pulumi.Output.all(account.name, keys.keys[0].value).apply(
                lambda values: {"account_name": values[0], "account_key": values[1]}
            )
        )

    def prefix_access(self, identity: azure.managedidentity.UserAssignedIdentity) -> list[pulumi.Resource]:
        """Storage Blob Data Contributor on the shared container, limited by an ABAC condition to the run's
        prefix (its blobs, and listings of it); the client writes there with its own access already."""
        account, container, prefix = shared_container(self._run)
        blobs = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
        not_blob_actions = " AND ".join(
            f"!(ActionMatches{{'{blobs}/{action}'}}" + (" AND NOT SubOperationMatches{'Blob.List'})" if action == "read" else ")")
            for action in ("read", "write", "add/action", "delete")
        )
        condition = (
            f"(({not_blob_actions}) OR (@Resource[{blobs}:path] StringStartsWith '{prefix}/')) AND "
            f"(!(ActionMatches{{'{blobs}/read'}} AND SubOperationMatches{{'Blob.List'}}) OR "
            f"(@Request[{blobs}:prefix] StringStartsWith '{prefix}/'))"
        )
        group = self._settings["storage_resource_group"] or self.resource_group
        scope = pulumi.Output.concat(
            "/subscriptions/", self.subscription, "/resourceGroups/", group,
            "/providers/Microsoft.Storage/storageAccounts/", account, "/blobServices/default/containers/", container,
        )
        grant = self.grant("job-prefix-access", identity.principal_id, BLOB_DATA_CONTRIBUTOR, scope,
                           condition=condition, condition_version="2.0")
        return [grant]

    def secret_references(self, values: Mapping[str, pulumi.Input[str]], identity: Any) -> SecretReferences:
        """Secure environment values: the ACI API never returns them; they travel as Pulumi secrets."""
        return SecretReferences({name: pulumi.Output.secret(value) for name, value in values.items()})

    def pull_access(self, registry: ImageRegistry, identity: azure.managedidentity.UserAssignedIdentity) -> PullAccess:
        """``imageRegistryCredentials``: the pool's credentials (a secret), or for an ACR an identity that may
        pull (the pool's first one, else the run's own, granted AcrPull)."""
        if registry.has_credentials:
            password = pulumi.Output.secret(registry.password())
            return PullAccess([{"server": registry.host, "username": registry.username, "password": password}])
        acr = registry.acr_name()
        if acr is None:
            return PullAccess()  # a public image: nothing to sign in with
        if self._settings["identities"]:
            return PullAccess([{"server": registry.host, "identity": self._settings["identities"][0]}])
        group = self._settings["registry_resource_group"] or self.resource_group
        scope = pulumi.Output.concat(
            "/subscriptions/", self.subscription, "/resourceGroups/", group,
            "/providers/Microsoft.ContainerRegistry/registries/", acr,
        )
        grant = self.grant("job-acr-pull", identity.principal_id, ACR_PULL, scope)
        return PullAccess([{"server": registry.host, "identity": identity.id}], [grant])
