"""The job variables every target that supports environments declares, defined once.

A target's variables model subclasses ``EnvironmentVariables`` instead of
``JobVariables``. The values are read from the validated variables by
``toolkit.submission`` (they shape the job's environment, not its job resource),
so they never appear in a target's job configuration.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from toolkit.infra.base import JobVariables


class EnvironmentVariables(JobVariables):
    """``packages``, ``requirements``, ``auto_packages``, ``include_files`` and its size limit."""

    packages: list[str] = Field(
        default_factory=list,
        description="PEP 508 requirements added to the job's environment, e.g. ['numpy>=2', 'pandas==2.2.3'].",
    )
    requirements: str | None = Field(
        default=None, description="A requirements file, relative to the caller's working directory."
    )
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


class EnvironmentSettings(BaseModel):
    """The environment variables of one call, taken from its validated job variables."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    packages: tuple[str, ...] = ()
    requirements: str | None = None
    auto_packages: bool = True
    include_files: tuple[str, ...] = ()
    include_files_max_mb: float = 100

    @classmethod
    def from_variables(cls, variables: dict[str, object]) -> EnvironmentSettings:
        return cls.model_validate(
            {name: variables[name] for name in ENVIRONMENT_VARIABLES if variables.get(name) is not None}
        )
