"""The environment settings of one call, read from its validated job variables.

The variables themselves are declared once for every target in
``toolkit.infra.variables.EnvironmentVariables``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from toolkit.infra.variables import ENVIRONMENT_VARIABLES


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
