"""``Plan``: what a preview would create, built from the engine's structured preview events."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from toolkit.environments.summary import EnvironmentSummary
from toolkit.infra.fields import unset
from toolkit.policy_packs import PolicyResult
from toolkit.secretvalues import mask
from toolkit.toolchain.plugins import PluginStatus

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
"""Pulumi's marker for a secret value in serialized property maps."""


def _scrub(value: Any) -> Any:
    """Replace Pulumi secret envelopes (and toolkit secrets) by ``"[secret]"``."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_SIG or value.get("4dabf18193072939515e22adb298388d") == SECRET_SIG:
            return "[secret]"
        # "__provider", "__defaults", "__internal": engine bookkeeping, not the user's inputs
        return {key: _scrub(item) for key, item in value.items() if not key.startswith("__")}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return mask(value)


class ResourceChange(BaseModel):
    """One step of a plan: ``op`` (create, update, delete, replace, same), resource type, name, inputs."""

    op: str
    type: str
    name: str
    inputs: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_event(cls, op: str, type_: str, urn: str, inputs: dict[str, Any] | None) -> ResourceChange:
        return cls(op=op, type=type_, name=urn.rsplit("::", 1)[-1], inputs=_scrub(dict(inputs or {})))


class Plan(BaseModel):
    """The infrastructure one call would create; ``str(plan)`` is a readable table."""

    run_id: str
    pool: str
    target: str
    function: str
    job: dict[str, Any] = Field(default_factory=dict, description="The rendered job configuration (secrets masked).")
    plugins: list[PluginStatus] = Field(
        default_factory=list, description="Provider plugins the pool's target needs and where each was found."
    )
    changes: list[ResourceChange] = Field(default_factory=list)
    environment: EnvironmentSummary | None = unset(
        "The call's environment: cached or to be built, and each package's source.",
    )
    policy_packs: list[str] = Field(default_factory=list, description="The pool's policy packs the preview ran.")
    policy_results: list[PolicyResult] = Field(default_factory=list)
    items: int | None = unset("A map's number of items (None: a single call).")
    parallelism: int | None = unset("A map's items running at once.")
    map_form: str | None = unset(
        "How the target runs a map: 'workers' (that many workers, each claiming items until none is left) "
        "or 'indexed' (one task per item)."
    )

    @property
    def allowed(self) -> bool:
        """False when a mandatory policy would stop the call."""
        return not any(result.mandatory for result in self.policy_results)

    def to_json(self) -> str:
        return json.dumps({**self.model_dump(mode="json"), "allowed": self.allowed}, indent=2)

    def __str__(self) -> str:
        header = f"Plan for {self.function} on pool {self.pool!r} ({self.target}), run {self.run_id}"
        if self.items is not None:
            header += f": a map of {self.items} items, at most {self.parallelism} at once, in this one stack"
            if self.map_form == "workers":
                header += f", by {self.parallelism} workers claiming items"
            elif self.map_form == "indexed":
                header += ", one task per item"
        rows = [(change.op, change.type, change.name) for change in self.changes]
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(("OP", "TYPE", "NAME"))]
        lines = [header, "", "Job configuration (secrets masked):"]
        lines += [f"    {key}: {json.dumps(value, default=str)}" for key, value in sorted(self.job.items())]
        if self.plugins:
            lines += ["", "Provider plugins:"] + [f"    {plugin.describe()}" for plugin in self.plugins]
        if self.environment is not None:
            lines += ["", *self.environment.lines()]
        lines += ["", "  ".join(h.ljust(w) for h, w in zip(("OP", "TYPE", "NAME"), widths))]
        lines += ["  ".join(col.ljust(w) for col, w in zip(row, widths)) for row in rows]
        for change in self.changes:
            if change.inputs:
                lines += ["", f"{change.name} ({change.type}):"]
                lines += [f"    {key}: {json.dumps(value, default=str)}" for key, value in sorted(change.inputs.items())]
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.op] = counts.get(change.op, 0) + 1
        lines += ["", "Resources: " + ", ".join(f"{n} to {op}" for op, n in sorted(counts.items()))]
        if self.policy_packs:
            verdict = "passed" if not self.policy_results else ("allowed" if self.allowed else "BLOCKED")
            lines += ["", f"Policies ({len(self.policy_packs)} pack(s)): {verdict}"]
            lines += [f"    {result}" for result in self.policy_results]
        return "\n".join(lines)
