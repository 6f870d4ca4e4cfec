"""The vertex_ai target's models: its job variables and its job (a CustomJob's ``jobSpec``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from toolkit.infra.fields import customizations_field, unset
from toolkit.targets.google.target import GoogleJob, GoogleVariables


class VertexAiVariables(GoogleVariables):
    """Job variables of the Vertex AI target."""

    machine_type: str = Field(default="n1-standard-4", description="Compute Engine machine type of the replica.")
    accelerator_type: str | None = unset("Accelerator, e.g. 'NVIDIA_TESLA_T4' or 'NVIDIA_L4'.", pattern=r"^[A-Z0-9_]+$")
    accelerator_count: int | None = unset("Number of accelerators (default 1 when accelerator_type is set).", ge=1)
    boot_disk_type: Literal["pd-ssd", "pd-standard", "hyperdisk-balanced"] = Field(
        default="pd-ssd", description="Boot disk type of the replica."
    )
    boot_disk_size_gb: int = Field(default=100, ge=100, le=64000, description="Boot disk size in GB.")
    network: str | None = unset("Full name of a peered VPC network: projects/NUMBER/global/networks/NAME.")
    maximum_run_time_hours: int = Field(
        default=1, ge=1, le=168, description="Vertex AI cancels the job after this many hours."
    )
    restart_job_on_worker_restart: bool = Field(
        default=False, description="Restart the whole job when a replica restarts."
    )
    scheduling_strategy: Literal["STANDARD", "SPOT", "FLEX_START"] | None = unset(
        "How resources are obtained (default: Vertex AI's, on-demand).",
    )
    disable_retries: bool = Field(default=False, description="Do not retry the job after an infrastructure error.")
    customizations: list[dict[str, Any]] = customizations_field(
        "the CustomJob's jobSpec (REST shape, camelCase)",
        "[{'op': 'add', 'path': '/enableWebAccess', 'value': true}]",
    )


class VertexAiJob(GoogleJob):
    maximum_run_time_hours: int = 1
    job_spec: dict[str, Any]
    """The CustomJob's ``jobSpec`` as the REST API takes it; the runner is worker pool 0."""

    runner_path = ("job_spec", "workerPoolSpecs")

    @model_validator(mode="after")
    def _check(self) -> VertexAiJob:
        machine = self.runner.setdefault("machineSpec", {})
        if "acceleratorCount" in machine and "acceleratorType" not in machine:
            raise ValueError("accelerator_count is set without accelerator_type; set both")
        if "acceleratorType" in machine:
            machine.setdefault("acceleratorCount", 1)
        return self

    @property
    def runner_image(self) -> str | None:
        """The runner's worker pool runs its ``containerSpec.imageUri``."""
        return self.runner.get("containerSpec", {}).get("imageUri")
