"""Field-level differences between two pool documents, and ``toolkit pool diff``'s preview.

A platform team changing a template wants to see *which* field changes
(``base_job_template.variables.properties.memory.default: '8Gi' -> '16Gi'``),
not two JSON blobs. This module knows nothing of Pulumi: the CLI previews a
change without it, and the pools-as-code provider uses the same comparison to
decide whether a pool needs updating.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolkit.errors import ConfigError
from toolkit.pools.registry import PoolRegistry, WorkPool, parse_pool
from toolkit.templating import check_template


@dataclass(frozen=True)
class FieldChange:
    """One changed field: ``op`` is '+' (added), '-' (removed) or '~' (changed)."""

    op: Literal["+", "-", "~"]
    path: str
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        if self.op == "+":
            return f"+ {self.path}: {_short(self.new)}"
        if self.op == "-":
            return f"- {self.path}: {_short(self.old)}"
        return f"~ {self.path}: {_short(self.old)} -> {_short(self.new)}"


def _short(value: Any, limit: int = 80) -> str:
    """A value's repr cut to one readable line (a whole added template would drown the change list)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def document(pool: WorkPool) -> dict[str, Any]:
    """The pool as published (the registry's JSON document), as plain data."""
    return json.loads(pool.to_document())


def field_changes(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Changes from ``old`` to ``new``, one per leaf; lists of equal length are compared item by item."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            child = f"{path}.{key}" if path else str(key)
            if key not in new:
                changes.append(FieldChange("-", child, old=old[key]))
            elif key not in old:
                changes.append(FieldChange("+", child, new=new[key]))
            else:
                changes.extend(field_changes(old[key], new[key], child))
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [change for i, (a, b) in enumerate(zip(old, new)) for change in field_changes(a, b, f"{path}[{i}]")]
    return [] if old == new else [FieldChange("~", path, old=old, new=new)]


def load_template(path: Path, pool_name: str) -> dict[str, Any]:
    """A base job template from a JSON file, checked like a published one."""
    try:
        template = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the template {str(path)!r}: {exc}. Pass a JSON file") from None
    check_template(template, where=f"template {str(path)!r} for pool {pool_name!r}")
    return template


def preview_template_change(
    registry: PoolRegistry, name: str, template_file: Path
) -> tuple[WorkPool, list[FieldChange]]:
    """What replacing pool ``name``'s base job template with ``template_file`` would change; writes nothing."""
    current = registry.get(name)
    template = load_template(template_file, name)
    candidate = parse_pool(
        json.dumps({**document(current), "base_job_template": template}), source=f"{name!r} with {str(template_file)!r}"
    )
    return candidate, field_changes(document(current), document(candidate))
