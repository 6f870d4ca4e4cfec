"""The job-variable models every target's ``<Target>Variables`` builds on.

``JobVariables`` holds what the engine enforces for every target (``timeout``,
``retries``); ``EnvironmentVariables`` adds what shapes a call's environment
(``packages``, ``include_files`` ...), declared once here for every target that
takes environments. ``toolkit.environments`` reads those values from the
validated variables; they never reach a target's job configuration.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from toolkit.infra.fields import unset


class JobVariables(BaseModel):
    """Base of every ``<Target>Variables`` model: unknown names are errors.

    ``timeout`` and ``retries`` are common to all targets because the engine
    enforces them: a job still running after ``timeout`` seconds is cancelled and
    its stack destroyed; a job that ended without a result runs again on a fresh
    job up to ``retries`` times (``toolkit.retries``).
    """

    model_config = ConfigDict(extra="forbid")

    timeout: int | None = unset("Seconds the job may run before it is cancelled and torn down.", ge=1)
    retries: int = Field(
        default=0,
        ge=0,
        description="Times a job that ended without a result (container or process killed, pod deleted or "
        "evicted, node lost) runs again on a fresh job; an exception the function raises is never retried.",
    )


class EnvironmentVariables(JobVariables):
    """``packages``, ``requirements``, ``auto_packages``, ``include_files`` and its size limit."""

    packages: list[str] = Field(
        default_factory=list,
        description="PEP 508 requirements added to the job's environment, e.g. ['numpy>=2', 'pandas==2.2.3'].",
    )
    requirements: str | None = unset("A requirements file, relative to the caller's working directory.")
    auto_packages: bool = Field(
        default=True,
        description="Add the third-party distributions the call imports, pinned to the caller's installed versions.",
    )
    include_files: list[str] = Field(
        default_factory=list,
        description="Files, directories and globs ('!' negates) relative to the caller's working directory, "
        "unpacked into the job's working directory.",
    )
    include_files_max_mb: float = Field(
        default=100, gt=0, description="Size limit of include_files in MB (uncompressed)."
    )


ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(
    name for name in EnvironmentVariables.model_fields if name not in JobVariables.model_fields
)
"""Names of the environment job variables (left out of job configurations)."""
