"""Azure Container Instances target: conformance under mocks, role assignments scoped to the run's
container, secure env, overrides, the watcher against a fake of the ARM API, and storage on Azurite."""

# ruff: noqa: F401, F811 - emulator fixtures are imported by name and requested as parameters

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from tests.emulators.azure import (
    ARM_RESOURCE,
    STORAGE_RESOURCE,
    Azurite,
    FakeArm,
    FakeManagedIdentity,
    SecureAzurite,
    account_key,
    azurite,
    azurite_oauth,
    container_group,
    fake_arm,
    managed_identity,
)
from tests.infra.conformance import RUN_KEY, SECRET_ENV, RemoteEnvironmentConformance, items_argument
from tests.infra.mocking import ProgramRun, run_program
from tests.infra.storage_roundtrip import map_round_trip, round_trip, run_job, sealed_bundle
from toolkit.bundles import BUNDLE_NAME, RESULT_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV, unseal_result
from toolkit.errors import ConfigError
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.rest import CloudApiError, RestClient
from toolkit.targets.azure import ACR_PULL, BLOB_DATA_CONTRIBUTOR, BLOB_DATA_READER, MANAGEMENT_ENDPOINT_ENV
from toolkit.targets.azure_container_instance.target import AzureContainerInstanceTarget, AzureContainerInstanceWatcher

GROUP = "azure-native:containerinstance:ContainerGroup"
ROLE = "azure-native:authorization:RoleAssignment"
RUN_ID = "0123abcd4567"
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
MAP_RUN_ID = "fedcba987654"
"""The map's storage test has a run (and so a storage account) of its own."""
AZURITE_ACCOUNTS = (f"tkrun{RUN_ID}", f"tkrun{MAP_RUN_ID}")
"""Azurite serves the storage account a run provisions, under its real name."""
GROUP_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ml/providers/Microsoft.ContainerInstance/"
    f"containerGroups/toolkit-{RUN_ID}"
)


class TestAzureContainerInstanceTarget(RemoteEnvironmentConformance):
    target_cls = AzureContainerInstanceTarget
    run_id = RUN_ID
    sample_variables = {
        "subscription": SUBSCRIPTION,
        "resource_group": "ml",
        "location": "westeurope",
        "image": "mlregistry.azurecr.io/toolkit-runner:3.11",
        "cpu": 2,
        "memory": 8,
        "gpu_sku": "V100",
        "gpu_count": 2,
        "identities": [
            "/subscriptions/x/resourceGroups/ml/providers/Microsoft.ManagedIdentity/userAssignedIdentities/acr-pull"
        ],
        "subnet_ids": ["/subscriptions/x/resourceGroups/ml/providers/Microsoft.Network/virtualNetworks/v/subnets/aci"],
        "env": {"MODE": "fast"},
        "labels": {"team": "ml"},
    }
    mock_outputs = {
        # The provider returns the identity map it was given as a list; the mocks echo inputs otherwise.
        GROUP: {"identity": {"type": "UserAssigned", "userAssignedIdentities": {}}},
        "azure-native:managedidentity:UserAssignedIdentity": {"principalId": "principal-1", "clientId": "client-1"},
    }
    mock_calls = {  # the key Azurite holds for the run's account (a base64 key, as Azure's are)
        "azure-native:storage:listStorageAccountKeys": {"keys": [{"keyName": "key1", "value": account_key(f"tkrun{RUN_ID}")}]}
    }
    job_type = GROUP
    shared_prefix_url = "az://runs@poolstorage.blob.core.windows.net/toolkit"
    write_only_fields = frozenset({"secureValue"})  # never returned by the ACI API
    expected_resources = {
        ("pulumi:providers:azure-native", "azure"),
        ("azure-native:storage:StorageAccount", "storage"),
        ("azure-native:storage:BlobContainer", "container"),
        ("azure-native:storage:Blob", "bundle"),
        ("azure-native:managedidentity:UserAssignedIdentity", "job-identity"),
        ("azure-native:authorization:RoleAssignment", "job-blob-access"),
        ("azure-native:authorization:RoleAssignment", "client-blob-read"),
        (GROUP, "job"),
    }
    expected_exports = {"container_group": "job-id"}  # the mocked id of the container group "job"

    pull_registry = {"url": "mlregistry.azurecr.io/ml"}

    def group(self, *layers: dict[str, Any]) -> dict[str, Any]:
        return self.program(*layers).one(GROUP).inputs

    def job_image(self, run: ProgramRun) -> str:
        return run.one(GROUP).inputs["containers"][0]["image"]

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        containers = run.one(GROUP).inputs["containers"]
        assert [c["name"] for c in containers][:2] == ["runner", "runner-1"]
        counts = {items_argument(c["command"]) for c in containers}
        assert len(counts) == 1
        return counts.pop(), len(containers)

    def test_a_map_beyond_a_groups_containers_is_refused_before_anything_exists(self) -> None:
        with pytest.raises(ConfigError, match="at most 60 map items at once; max_parallel=61"):
            self.target.map_parallelism(100, 61, "test-pool")
        assert self.target.map_parallelism(100, None, "test-pool") == 60

    def uploaded_names(self, run: ProgramRun) -> set[str]:
        return {r.inputs["blobName"] for r in run.of_type("azure-native:storage:Blob")}

    # -- pulling the environment image ------------------------------------------------------

    def test_the_pools_first_identity_pulls_from_the_acr(self) -> None:
        run = self.environment_program(self.sample())
        identity = self.sample_variables["identities"][0]
        assert run.one(GROUP).inputs["imageRegistryCredentials"] == [
            {"server": "mlregistry.azurecr.io", "identity": identity}
        ]
        assert "job-acr-pull" not in {r.name for r in run.of_type(ROLE)}

    def test_without_an_identity_the_runs_own_is_granted_acr_pull_on_exactly_that_registry(self) -> None:
        run = self.environment_program({**self.sample(), "identities": [], "registry_resource_group": "images"})
        roles = {r.name: r.inputs for r in run.of_type(ROLE)}
        assert roles["job-acr-pull"]["scope"] == (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/images/providers/Microsoft.ContainerRegistry/"
            "registries/mlregistry"
        )
        assert roles["job-acr-pull"]["roleDefinitionId"].endswith(f"/roleDefinitions/{ACR_PULL}")
        assert roles["job-acr-pull"]["principalId"] == "principal-1"
        identity = run.one("azure-native:managedidentity:UserAssignedIdentity")
        assert run.one(GROUP).inputs["imageRegistryCredentials"] == [
            {"server": "mlregistry.azurecr.io", "identity": identity.id}
        ]

    def test_pool_credentials_are_a_secret_registry_password(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGISTRY_TOKEN", "registry-password-never-in-plaintext")
        registry = ImageRegistry(url="mlregistry.azurecr.io/ml", username="robot", password_env="REGISTRY_TOKEN")
        context = dataclasses.replace(self.environment_context(self.sample()), image_registry=registry)
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)
        group = run.one(GROUP)
        assert group.inputs["imageRegistryCredentials"] == [
            {"server": "mlregistry.azurecr.io", "username": "robot", "password": "registry-password-never-in-plaintext"}
        ]
        assert "imageRegistryCredentials.0.password" in group.secret_paths()
        assert "registry-password-never-in-plaintext" not in json.dumps(
            {k: v for k, v in group.raw.items() if k != "imageRegistryCredentials"}
        )

    def test_a_shared_prefix_run_may_use_only_its_own_prefix(self) -> None:
        run = self.shared_prefix_program()
        grant = run.one(ROLE).inputs
        assert grant["scope"] == (
            "/subscriptions/x-sub/resourceGroups/ml/providers/Microsoft.Storage/storageAccounts/poolstorage"
            "/blobServices/default/containers/runs"
        ).replace("x-sub", SUBSCRIPTION)
        assert grant["conditionVersion"] == "2.0"
        assert f"StringStartsWith 'toolkit/{RUN_ID}/'" in grant["condition"]
        assert run.one(GROUP).inputs["containers"][0]["environmentVariables"]

    def test_a_shared_prefix_must_name_its_storage_account(self) -> None:
        self.target_cls.check_storage_url("az://runs@poolstorage.blob.core.windows.net/toolkit")
        with pytest.raises(ConfigError, match="az://"):
            self.target_cls.check_storage_url("/srv/runs")
        context = dataclasses.replace(self.context(self.sample()), storage_url="az://runs/toolkit/x", shared_storage=True)
        with pytest.raises(Exception, match="names no storage account"):
            run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)

    def test_overrides_reach_the_container_group(self) -> None:
        group = self.group(self.sample())
        runner = group["containers"][0]
        assert runner["image"] == self.sample_variables["image"]
        assert runner["resources"]["requests"] == {"cpu": 2, "memoryInGB": 8, "gpu": {"sku": "V100", "count": 2}}
        assert runner["command"] == [
            "python3",
            "-u",
            "-m",
            "toolkit.runner",
            "--storage",
            f"az://run@tkrun{RUN_ID}.blob.core.windows.net",
        ]
        assert group["restartPolicy"] == "Never" and group["osType"] == "Linux"
        assert group["location"] == "westeurope" and group["resourceGroupName"] == "ml"
        assert group["subnetIds"] == [{"id": self.sample_variables["subnet_ids"][0]}]
        assert group["identity"]["userAssignedIdentities"] == [
            "job-identity-id",
            self.sample_variables["identities"][0],
        ]
        assert group["tags"] == {"team": "ml", "toolkit-run": RUN_ID, "toolkit-pool": "test-pool"}

    def test_defaults_request_one_cpu_and_no_gpu(self) -> None:
        requests = self.group({"subscription": SUBSCRIPTION, "resource_group": "ml", "image": "img"})["containers"][0][
            "resources"
        ]["requests"]
        assert requests == {"cpu": 1.0, "memoryInGB": 1.5}

    def test_the_subscription_selects_an_explicit_provider(self) -> None:
        run = self.program(self.sample())
        assert run.one("pulumi:providers:azure-native").inputs["subscriptionId"] == SUBSCRIPTION

    def test_role_assignments_are_scoped_to_exactly_the_runs_container(self) -> None:
        run = self.program(self.sample())
        account = run.one("azure-native:storage:StorageAccount")
        assert account.inputs["accountName"] == f"tkrun{RUN_ID}" and account.inputs["allowBlobPublicAccess"] is False
        container = run.one("azure-native:storage:BlobContainer")
        assert container.inputs["containerName"] == "run" and container.inputs["publicAccess"] == "None"
        roles = {r.name: r.inputs for r in run.of_type(ROLE)}
        assert set(roles) == {"job-blob-access", "client-blob-read"}
        assert {r["scope"] for r in roles.values()} == {container.id}
        prefix = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/"
        assert roles["job-blob-access"]["roleDefinitionId"] == prefix + BLOB_DATA_CONTRIBUTOR
        assert roles["job-blob-access"]["principalId"] == "principal-1"
        assert roles["job-blob-access"]["principalType"] == "ServicePrincipal"
        assert roles["client-blob-read"]["roleDefinitionId"] == prefix + BLOB_DATA_READER
        bundle = run.one("azure-native:storage:Blob").inputs
        assert bundle["blobName"] == BUNDLE_NAME and bundle["type"] == "Block"

    def test_the_client_principal_type_can_be_a_service_principal(self) -> None:
        run = self.program({**self.sample(), "client_principal_type": "ServicePrincipal"})
        roles = {r.name: r.inputs for r in run.of_type(ROLE)}
        assert roles["client-blob-read"]["principalType"] == "ServicePrincipal"

    def test_secrets_are_secure_environment_variables(self) -> None:
        run = self.program(self.sample())
        group = run.one(GROUP)
        env = {e["name"]: e for e in group.inputs["containers"][0]["environmentVariables"]}
        assert env["MODE"] == {"name": "MODE", "value": "fast"}
        assert env["AZURE_CLIENT_ID"] == {"name": "AZURE_CLIENT_ID", "value": "client-1"}
        assert env["TOOLKIT_RUN_KEY"] == {"name": "TOOLKIT_RUN_KEY", "secureValue": RUN_KEY}
        assert set(env[SECRET_ENV]) == {"name", "secureValue"}
        index = {name: i for i, name in enumerate(env)}
        assert {
            f"containers.0.environmentVariables.{index['TOOLKIT_RUN_KEY']}.secureValue",
            f"containers.0.environmentVariables.{index[SECRET_ENV]}.secureValue",
        } <= group.secret_paths()

    def test_customizations_patch_the_container_group(self) -> None:
        patch = [{"op": "add", "path": "/priority", "value": "Spot"}]
        assert self.group({**self.sample(), "customizations": patch})["priority"] == "Spot"

    @pytest.mark.parametrize(
        ("override", "words"),
        [
            ({"gpu_sku": "A100"}, ["'gpu_sku'", "'A100'", "V100"]),
            ({"memory": 0}, ["'memory'", "0"]),
            ({"cpu": "two"}, ["'cpu'", "number"]),
            ({"subscription": "my-sub"}, ["'subscription'", "'my-sub'"]),
            ({"subnet_ids": "subnet-1"}, ["'subnet_ids'", "array"]),
            ({"client_principal_type": "Robot"}, ["'client_principal_type'", "ServicePrincipal"]),
        ],
    )
    def test_bad_overrides_are_rejected_before_rendering(self, override: dict[str, Any], words: list[str]) -> None:
        with pytest.raises(ConfigError) as info:
            self.render(override)
        assert all(word in str(info.value) for word in words), str(info.value)

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            (
                {"customizations": [{"op": "replace", "path": "/restart_policy", "value": "OnFailure"}]},
                "must be 'Never'",
            ),
            (
                {"customizations": [{"op": "add", "path": "/not_an_argument", "value": 1}]},
                "no argument 'not_an_argument'",
            ),
            ({"gpu_count": 1}, "gpu_count is set without gpu_sku"),
            ({"env": {"AZURE_CLIENT_ID": "x"}}, "set by the toolkit"),
        ],
    )
    def test_inconsistent_jobs_are_rejected_when_parsed(self, override: dict[str, Any], message: str) -> None:
        config, _ = self.render({"image": "img", "resource_group": "ml", **override})
        with pytest.raises(ConfigError, match=message):
            self.target.parse_job(config, "test-pool")

    @pytest.mark.parametrize("missing", ["image", "resource_group"])
    def test_runs_without_image_or_resource_group_are_refused_before_provisioning(self, missing: str) -> None:
        given = {"image": "img", "resource_group": "ml"}
        del given[missing]
        _, variables = self.render(given)
        with pytest.raises(ConfigError, match=f"needs the job variable '{missing}'"):
            self.target.check_capabilities(variables, "test-pool")


# -- the watcher against a fake Azure Resource Manager ------------------------------------------------------

PULL_FAILED = [
    {
        "count": 3,
        "name": "Failed",
        "type": "Warning",
        "message": 'Failed to pull image "mlregistry.azurecr.io/missing:1": manifest unknown',
    }
]


@pytest.mark.parametrize(
    ("state", "group_state", "events", "provisioning", "expected", "exit_code", "words"),
    [
        ({}, "Pending", [], "Creating", "pending", None, []),
        ({"state": "Waiting", "detailStatus": "ContainerCreating"}, "Pending", [], "Succeeded", "pending", None, []),
        (
            {"state": "Running", "startTime": "2026-11-24T10:00:00Z", "detailStatus": ""},
            "Running",
            [],
            "Succeeded",
            "running",
            None,
            [],
        ),
        (
            {"state": "Terminated", "exitCode": 0, "detailStatus": "Completed"},
            "Succeeded",
            [],
            "Succeeded",
            "succeeded",
            0,
            [],
        ),
        (
            {"state": "Terminated", "exitCode": 2, "detailStatus": "Error"},
            "Failed",
            [],
            "Succeeded",
            "failed",
            2,
            ["status 2", "Error"],
        ),
        (
            {"state": "Terminated", "exitCode": 137, "detailStatus": "OOMKilled"},
            "Failed",
            [],
            "Succeeded",
            "failed",
            137,
            ["raise the 'memory' job variable"],
        ),
        (
            {"state": "Waiting", "detailStatus": "ImagePullBackOff"},
            "Pending",
            PULL_FAILED,
            "Succeeded",
            "failed",
            None,
            ["could not be pulled", "manifest unknown"],
        ),
        (
            {},
            "Failed",
            [
                {
                    "name": "Failed",
                    "type": "Warning",
                    "message": "The requested resource is not available in the location 'westeurope'.",
                }
            ],
            "Failed",
            "failed",
            None,
            ["failed to start", "not available"],
        ),
    ],
    ids=["creating", "container-creating", "running", "succeeded", "exit-2", "oom", "image-pull", "group-failed"],
)
def test_watcher_maps_instance_views(
    fake_arm: FakeArm,
    monkeypatch: pytest.MonkeyPatch,
    state: dict[str, Any],
    group_state: str,
    events: list[dict[str, Any]],
    provisioning: str,
    expected: str,
    exit_code: int | None,
    words: list[str],
) -> None:
    monkeypatch.setenv(MANAGEMENT_ENDPOINT_ENV, fake_arm.url)
    fake_arm.groups[GROUP_ID] = container_group(GROUP_ID, state, group_state, events, provisioning)
    status = AzureContainerInstanceTarget().watcher(None, {"container_group": GROUP_ID}).status()  # type: ignore[arg-type]
    assert (status.state, status.exit_code) == (expected, exit_code)
    assert all(word in (status.reason or "") for word in words), status.reason
    assert fake_arm.server.requests[-1].query == {"api-version": ["2023-05-01"]}


def test_watcher_returns_only_new_log_text(fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MANAGEMENT_ENDPOINT_ENV, fake_arm.url)
    watcher = AzureContainerInstanceWatcher(GROUP_ID, min_interval=0)
    key = f"{GROUP_ID}/runner"
    fake_arm.logs[key] = "starting\n"
    assert watcher.read_logs() == "starting\n"
    assert watcher.read_logs() == ""
    fake_arm.logs[key] = "starting\nworking\n"
    assert watcher.read_logs() == "working\n"
    fake_arm.logs[key] = "restarted\n"
    assert watcher.read_logs() == "restarted\n"


def test_watcher_throttles_reads_while_the_job_runs(fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MANAGEMENT_ENDPOINT_ENV, fake_arm.url)
    fake_arm.groups[GROUP_ID] = container_group(GROUP_ID, {"state": "Running"}, "Running")
    watcher = AzureContainerInstanceWatcher(GROUP_ID, min_interval=60)
    assert watcher.status().state == watcher.status().state == "running"
    assert len(fake_arm.server.calls("GET")) == 1


# -- storage: the run's storage account on Azurite ---------------------------------------------------------


def test_bundle_and_result_travel_through_the_runs_container(azurite: Azurite) -> None:
    suite = TestAzureContainerInstanceTarget()
    run = suite.program(suite.sample())
    account = run.one("azure-native:storage:StorageAccount").inputs["accountName"]
    container = run.one("azure-native:storage:BlobContainer").inputs["containerName"]
    blob = run.one("azure-native:storage:Blob").inputs["blobName"]
    connection = azurite.connection_string(account)
    service = BlobServiceClient.from_connection_string(connection)
    service.create_container(container)

    def upload(data: bytes) -> None:  # as the provider's Blob resource does, with the account's key
        service.get_blob_client(container, blob).upload_blob(data)

    url = AzureContainerInstanceTarget().per_run_storage_url(RUN_ID)
    assert url == f"az://{container}@{account}.blob.core.windows.net"
    result = round_trip(url, {"connection_string": connection}, upload, RUN_KEY)
    assert result == 42
    assert {b.name for b in service.get_container_client(container).list_blobs()} == {BUNDLE_NAME, "result.tkb"}


def test_a_maps_containers_claim_each_item_once_on_blob_storage(azurite: Azurite, tmp_path) -> None:  # noqa: ANN001
    """Items in the run's container, three runners claiming them at once (Blob's If-None-Match)."""
    url = AzureContainerInstanceTarget().per_run_storage_url(MAP_RUN_ID)
    container, account = url.removeprefix("az://").split("@")[0], url.split("@")[1].split(".")[0]
    connection = azurite.connection_string(account)
    BlobServiceClient.from_connection_string(connection).create_container(container)
    results = map_round_trip(url, {"connection_string": connection}, RUN_KEY, tmp_path)
    assert [value for value, _pid in results] == [x + 40 for x in range(12)]


# -- the real credential code: DefaultAzureCredential's managed-identity path --------------------------------


def test_arm_calls_carry_the_token_of_the_managed_identity(
    fake_arm: FakeArm, managed_identity: FakeManagedIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MANAGEMENT_ENDPOINT_ENV, fake_arm.url)
    fake_arm.groups[GROUP_ID] = container_group(GROUP_ID, {"state": "Running"}, "Running")
    assert AzureContainerInstanceTarget().watcher(None, {"container_group": GROUP_ID}).status().state == "running"  # type: ignore[arg-type]
    assert len(managed_identity.requests_for(ARM_RESOURCE)) == 1  # asked once, then cached by the credential
    sent = {r.headers.get("Authorization") for r in fake_arm.server.requests}
    assert sent == {f"Bearer {managed_identity.token_for(ARM_RESOURCE)}"}
    # the fake refuses a call without that token, so the test above cannot pass without it
    with pytest.raises(CloudApiError, match="HTTP 401 AuthenticationFailed"):
        RestClient(fake_arm.url, requests.Session()).call("GET", GROUP_ID, params={"api-version": "2023-05-01"})


def test_the_job_reaches_run_storage_as_its_managed_identity(
    azurite_oauth: SecureAzurite, managed_identity: FakeManagedIdentity
) -> None:
    """The ACI job's path: no key, ``AZURE_CLIENT_ID`` names the run's identity, its token goes to Blob storage."""
    suite = TestAzureContainerInstanceTarget()
    run = suite.program(suite.sample())
    account = run.one("azure-native:storage:StorageAccount").inputs["accountName"]
    container = run.one("azure-native:storage:BlobContainer").inputs["containerName"]
    blob = run.one("azure-native:storage:Blob").inputs["blobName"]
    job_env = {e["name"]: e.get("value") for e in run.one(GROUP).inputs["containers"][0]["environmentVariables"]}
    client_id = job_env["AZURE_CLIENT_ID"]
    assert client_id == run.one("azure-native:managedidentity:UserAssignedIdentity").extra_outputs["clientId"]
    certificate = str(azurite_oauth.certificate)
    service = BlobServiceClient.from_connection_string(
        azurite_oauth.connection_string(account), connection_verify=certificate
    )
    service.create_container(container)
    # the bundle goes in as the provider's Blob resource puts it, with the account's key
    service.get_blob_client(container, blob).upload_blob(sealed_bundle(RUN_KEY))

    url = AzureContainerInstanceTarget().per_run_storage_url(RUN_ID)
    options = {"account_host": azurite_oauth.account_host(account)}  # Azurite's address for the account
    job = {
        RUN_KEY_ENV: RUN_KEY,
        STORAGE_OPTIONS_ENV: json.dumps(options),
        "AZURE_CLIENT_ID": client_id,
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": managed_identity.url,
        "SSL_CERT_FILE": certificate,  # the job trusts Azurite's certificate, as it trusts Azure's
    }
    done = run_job(run.one(GROUP).inputs["containers"][0]["command"], job)
    assert done.returncode == 0, done.stderr
    asked = [r.query.get("client_id") for r in managed_identity.requests_for(STORAGE_RESOURCE)]
    assert asked and all(ids == [client_id] for ids in asked)  # as the run's identity, nothing else
    result = service.get_blob_client(container, RESULT_NAME).download_blob().readall()
    assert unseal_result(result, RUN_KEY, f"{url}/{RESULT_NAME}") == 42
    # Azurite refuses the container without credentials: the job did not get in anonymously
    anonymous = BlobServiceClient(f"{azurite_oauth.blob_endpoint}/{account}", connection_verify=certificate)
    with pytest.raises(HttpResponseError):
        list(anonymous.get_container_client(container).list_blobs())
