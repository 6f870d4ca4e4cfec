"""Questions about nested JSON-like values: dicts (any mapping) and lists, down to their leaves."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def any_leaf(value: Any, test: Callable[[Any], bool]) -> bool:
    """Whether ``test`` holds for ``value`` or for anything inside its mappings and lists."""
    if test(value):
        return True
    if isinstance(value, Mapping):
        return any(any_leaf(item, test) for item in value.values())
    if isinstance(value, list):
        return any(any_leaf(item, test) for item in value)
    return False
