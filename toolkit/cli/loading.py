"""Loading ``FILE.py:FUNC`` for ``toolkit run`` and ``toolkit preview``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from toolkit.errors import ConfigError


def load_function(spec: str) -> Any:
    """Import FILE.py as a module (its directory first on sys.path) and return FUNC from it.

    The module is registered under its file's stem so its functions pickle by
    value: the job has no copy of the user's file.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text.endswith(".py"):
        raise ConfigError(f"expected FILE.py:FUNC, got {spec!r}")
    path = Path(path_text).resolve()
    if not path.exists():
        raise ConfigError(f"no such file: {path}")
    module_name = path.stem
    sys.path.insert(0, str(path.parent))
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    loader_spec.loader.exec_module(module)
    if not hasattr(module, name):
        functions = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ConfigError(f"{path.name} has no function {name!r}; it has: {', '.join(functions)}")
    return getattr(module, name)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``-v key=value`` pairs; a value that parses as JSON keeps its type (8, true, [..], {..})."""
    variables: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"job variable {item!r} must look like key=value (e.g. -v mem_limit=512m)")
        try:
            variables[key] = json.loads(raw)
        except ValueError:
            variables[key] = raw
    return variables


def parse_args(items: list[str]) -> list[Any]:
    """``--arg JSON`` values, in order, as the function's positional arguments."""
    values = []
    for item in items:
        try:
            values.append(json.loads(item))
        except ValueError as exc:
            raise ConfigError(f"--arg {item!r} is not JSON ({exc}); quote strings: --arg '\"text\"'") from None
    return values
