"""Other names for job variables: what Prefect's templates (and habit) call them, and their units.

Each target declares one table, ``Target.synonyms``: a name used elsewhere
-> a ``Synonym`` saying which of our variables it is (or that none is, and
why) and how its value converts. The table serves three readers: the "did
you mean" of an unknown job variable (``memory`` on docker suggests
``mem_limit``), ``toolkit.prefect`` (which accepts Prefect's names and units
per call) and ``toolkit pool import`` (which renames a Prefect template's
variables). Converters here are the unit rules those names carry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ConfigError

Converter = Callable[[Any, Mapping[str, Any]], Any]
"""``(value, every name given alongside) -> our value``; raises ``ConfigError`` on bad input."""


@dataclass(frozen=True)
class Synonym:
    """Another tool's name for one of a target's job variables."""

    ours: str | None
    """Our variable; ``None`` when nothing here corresponds."""
    why: str = ""
    """For a rename: the unit or meaning that differs. Without a counterpart: why, and what to use."""
    convert: Converter | None = None
    """Turns the other tool's value into ours (units); ``None``: the value carries over unchanged."""
    part_of: str | None = None
    """Not a variable of its own: read by the converter of this other name (``memory_unit`` of ``memory``)."""

    def describe(self, name: str) -> str:
        if self.ours is None:
            return f"{name!r} has no counterpart here: {self.why}"
        if self.part_of:
            return f"{name!r} is combined with {self.part_of!r} into {self.ours!r} ({self.why})"
        if self.ours == name:
            return f"{name!r} ({self.why})"
        return f"{name!r} is {self.ours!r} here" + (f" ({self.why})" if self.why else "")


def no_counterpart(why: str) -> Synonym:
    return Synonym(None, why)


def renamed(ours: str, why: str = "", convert: Converter | None = None) -> Synonym:
    return Synonym(ours, why, convert)


PREFECT_COMMON: dict[str, Synonym] = {
    "name": no_counterpart("the toolkit names every resource after the run id (`toolkit runs ls`)"),
    "command": no_counterpart(
        "Prefect's command replaces the flow-run entrypoint; a toolkit job always runs its runner, "
        "which runs a Prefect flow with Prefect's engine"
    ),
}
"""Names every Prefect worker's template has."""


def prefect_retries(own: str | None = None) -> dict[str, Synonym]:
    """Prefect's names for how often a job runs again -- its kubernetes worker's ``backoff_limit``,
    its cloud-run-v2 worker's ``max_retries`` -- as our ``retries``; ``own``: the target's own
    variable of one of those names (its controller's setting, which ``retries`` is carried into)."""
    why = "runs of a job that ended without a result (killed, evicted, node lost); an exception is never retried"
    return {name: renamed("retries", why) for name in ("backoff_limit", "max_retries") if name != own}


# -- unit converters ------------------------------------------------------------------

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


def kubernetes_memory(value: Any, _given: Mapping[str, Any]) -> Any:
    """An integer is MiB (``memory=64000`` -> ``'64000Mi'``); a quantity string carries over."""
    if isinstance(value, bool):
        raise ConfigError(f"memory {value!r} is not an amount; give MiB as an integer or a quantity like '64Gi'")
    if isinstance(value, int):
        return f"{value}Mi"
    if isinstance(value, str) and _NUMBER.match(value) and "." not in value:
        return f"{value.strip()}Mi"
    return value


def kubernetes_cpu(value: Any, _given: Mapping[str, Any]) -> Any:
    """A number of cores (``2``, ``0.5``) becomes the quantity string Kubernetes takes."""
    if isinstance(value, bool):
        raise ConfigError(f"cpu {value!r} is not an amount; give cores as a number or a quantity like '500m'")
    if isinstance(value, (int, float)):
        return str(value)
    return value


def docker_memory(value: Any, _given: Mapping[str, Any]) -> Any:
    """An integer is MiB, as Prefect's examples write memory (``64000`` -> ``'64000m'``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}m"
    return value


_ECS_CPU = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(vcpus?)?\s*$", re.I)
_ECS_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:(gb|gib)|mb|mib)?\s*$", re.I)


def ecs_cpu_units(value: Any, _given: Mapping[str, Any]) -> Any:
    """ECS CPU units (1024 = one vCPU), also as ECS writes them: ``'1024'`` or ``'1 vCPU'``."""
    return _ecs_amount(value, _ECS_CPU, "ECS cpu {!r} is not CPU units (1024) or vCPUs ('1 vCPU')")


def ecs_memory_mib(value: Any, _given: Mapping[str, Any]) -> Any:
    """ECS memory in MiB, also as ECS writes it: ``'2048'`` or ``'2 GB'``."""
    return _ecs_amount(value, _ECS_MEMORY, "ECS memory {!r} is not MiB (2048) or GB ('2 GB')")


def _ecs_amount(value: Any, pattern: re.Pattern[str], refusal: str) -> Any:
    """A string in ECS's unit, or in the unit 1024 times larger when ``pattern``'s second group names it."""
    if not isinstance(value, str):
        return value
    match = pattern.match(value)
    if not match:
        raise ConfigError(refusal.format(value))
    amount = float(match.group(1))
    return round(amount * 1024) if match.group(2) else round(amount)


_CLOUD_RUN_UNITS = ("G", "Gi", "M", "Mi")


def cloud_run_memory(value: Any, given: Mapping[str, Any]) -> Any:
    """Prefect's Cloud Run block: an integer ``memory`` with ``memory_unit`` (default ``'Mi'``)."""
    unit = given.get("memory_unit")
    if isinstance(value, int) and not isinstance(value, bool):
        unit = unit or "Mi"
        if unit not in _CLOUD_RUN_UNITS:
            raise ConfigError(f"memory_unit {unit!r} is not one of {', '.join(_CLOUD_RUN_UNITS)}")
        return f"{value}{unit}"
    if unit:
        raise ConfigError(f"memory_unit={unit!r} goes with an integer memory; memory={value!r} already has a unit")
    return value


def cloud_run_cpu(value: Any, _given: Mapping[str, Any]) -> Any:
    """A whole number of CPUs (Prefect's block took an integer) becomes millicores."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{round(value * 1000)}m"
    return value


def into_mapping(key: str) -> Converter:
    """A variable that is one entry of one of our mappings (``prefect_api_key_secret_arn``)."""

    def convert(value: Any, _given: Mapping[str, Any]) -> Any:
        return {key: value}

    return convert


def gcp_secret_reference(value: Any) -> Any:
    """Prefect's ``{"secret": NAME, "version": V}`` -> our ``'NAME:V'``."""
    if isinstance(value, Mapping) and "secret" in value:
        version = value.get("version") or "latest"
        return f"{value['secret']}:{version}"
    return value


def gcp_secret_into(key: str) -> Converter:
    def convert(value: Any, _given: Mapping[str, Any]) -> Any:
        return {key: gcp_secret_reference(value)}

    return convert


def gcp_secrets(value: Any, _given: Mapping[str, Any]) -> Any:
    """``env_from_secrets``: NAME -> ``{"secret", "version"}`` into NAME -> ``'secret:version'``."""
    if isinstance(value, Mapping):
        return {name: gcp_secret_reference(ref) for name, ref in value.items()}
    return value


def translate(synonyms: Mapping[str, Synonym], variables: Mapping[str, Any]) -> dict[str, Any]:
    """Variables given in another tool's names and units -> ours.

    A name without an entry carries over (ours, or unknown: validation then
    names the closest match); a name with no counterpart is a ``ConfigError``
    saying why and what to use; names mapped into one of our mappings merge
    into it; two names setting the same variable are an error.
    """
    translated: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, value in variables.items():
        synonym = synonyms.get(name, Synonym(name))
        if synonym.ours is None:
            raise ConfigError(f"job variable {synonym.describe(name)}")
        if synonym.part_of:
            if synonym.part_of not in variables:
                raise ConfigError(f"job variable {name!r} needs {synonym.part_of!r} alongside it ({synonym.why})")
            continue
        converted = synonym.convert(value, variables) if synonym.convert else value
        ours = synonym.ours
        previous = translated.get(ours)
        if ours in translated and not (isinstance(previous, Mapping) and isinstance(converted, Mapping)):
            raise ConfigError(f"job variables {source[ours]!r} and {name!r} both set {ours!r}; pass one")
        translated[ours] = {**previous, **converted} if isinstance(previous, Mapping) else converted
        source[ours] = name
    return translated
