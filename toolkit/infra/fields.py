"""Kinds of model field that the job variables, pools and plans declare many times, written once.

Each returns a pydantic ``Field``; the JSON schema a pool's template carries is
the same as with ``Field`` written out.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field


def unset(description: str, **constraints: Any) -> Any:
    """A field that is None until given: the target, the pool or the provider then decides what it is."""
    return Field(default=None, description=description, **constraints)


def customizations_field(applied_to: str, example: str) -> Any:
    """A target's ``customizations`` job variable: JSON-6902 patches of its job, applied at
    ``Target.customization_root``."""
    return Field(default_factory=list, description=f"JSON-6902 patches applied to {applied_to}, e.g. {example}.")
