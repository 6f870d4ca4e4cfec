"""What a call imports: the third-party distributions behind the pickled function and arguments.

The walk follows what cloudpickle will serialise and what the function will
import when it runs: the function's code (``import`` statements, nested code
objects), the globals its code names, closure cells, defaults, bound methods,
partials, the classes of arguments and the members of containers. Each module
found maps to its installed distribution with
``importlib.metadata.packages_distributions()``; a namespace package shared by
several distributions (``google``) is narrowed down by the module's file.

Modules of the caller's own code (anything not under the interpreter's
library directories, editable installs included) travel by value in the bundle
(``toolkit.bundles``) and are walked into, never mapped to a distribution.

The view of what is installed follows the interpreter's site-packages: a
distribution installed after the first call (``pip install`` in a notebook)
is seen by the next one (``installed_state``).
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib
import importlib.metadata as metadata
import importlib.util
import json
import os
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from toolkit import settings
from toolkit.bundles import library_roots

RUNNER_DISTRIBUTIONS = frozenset({"toolkit", "cloudpickle", "fsspec"})
"""The runner's own dependencies: every runner image has them, at the toolkit's pins."""
_MAX_OBJECTS = 20_000
"""Bound on the walk (a huge argument list is sampled by type, not by every element)."""
_MAX_CONTAINER_ITEMS = 200


def _is_installed_module(module: types.ModuleType) -> bool:
    path = getattr(module, "__file__", None)
    if not path:
        return False  # builtin or namespace; the name decides
    return os.path.abspath(path).startswith(library_roots())


@dataclass(frozen=True)
class CallModules:
    """What a walk of one call found."""

    referenced: set[str]
    """Every module the call imports or references, the caller's own included."""
    imported: set[str]
    """Absolute ``import`` statements of the code that travels by value, outside any ``try`` block:
    the job runs them, and one that cannot import fails the call."""


class _Walker:
    """Collects module names a call needs (``import`` targets and referenced modules)."""

    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.imports: set[str] = set()
        self._seen: set[int] = set()

    def walk(self, roots: Iterable[Any]) -> set[str]:
        pending = list(roots)
        while pending and len(self._seen) < _MAX_OBJECTS:
            obj = pending.pop()
            if id(obj) in self._seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, complex)):
                continue
            self._seen.add(id(obj))
            pending.extend(self._children(obj))
        return self.modules

    def _module(self, name: str | None) -> None:
        if name and not name.startswith("."):
            self.modules.add(name)

    def _children(self, obj: Any) -> list[Any]:
        if isinstance(obj, types.ModuleType):
            self._module(obj.__name__)
            if _is_local_module(obj.__name__):  # the caller's module travels whole, by value
                return [value for key, value in vars(obj).items() if not key.startswith("__")]
            return []
        if isinstance(obj, types.CodeType):
            return self._code(obj)
        if isinstance(obj, types.FunctionType):
            self._module(obj.__module__)
            if not _by_value(obj):
                return []  # pickled by reference: the job imports its module, nothing more
            found: list[Any] = [obj.__code__, obj.__defaults__, obj.__kwdefaults__]
            found += [cell.cell_contents for cell in obj.__closure__ or () if _has_contents(cell)]
            names = _global_names(obj.__code__)
            found += [obj.__globals__[name] for name in names if name in obj.__globals__]
            found += list(vars(obj).values())
            return found
        if isinstance(obj, types.MethodType):
            return [obj.__func__, obj.__self__]
        if isinstance(obj, functools.partial):
            return [obj.func, obj.args, obj.keywords]
        if isinstance(obj, type):
            self._module(obj.__module__)
            if _by_value(obj):  # its methods travel with it and run remotely
                return [value for value in vars(obj).values()] + list(obj.__bases__)
            return list(obj.__bases__)
        if isinstance(obj, (list, tuple, set, frozenset)):
            return list(obj)[:_MAX_CONTAINER_ITEMS]
        if isinstance(obj, dict):
            items = list(obj.items())[:_MAX_CONTAINER_ITEMS]
            return [key for key, _ in items] + [value for _, value in items]
        if isinstance(obj, (staticmethod, classmethod)):
            return [obj.__func__]
        if isinstance(obj, property):
            return [obj.fget, obj.fset, obj.fdel]
        children: list[Any] = [type(obj)]
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            children.append(state)
        return children

    def _code(self, code: types.CodeType) -> list[Any]:
        nested: list[Any] = [const for const in code.co_consts if isinstance(const, types.CodeType)]
        bytecode = dis.Bytecode(code)
        instructions = list(bytecode)
        guarded = _try_blocks(bytecode, instructions)
        for index, instruction in enumerate(instructions):
            if instruction.opname != "IMPORT_NAME":
                continue
            level = instructions[index - 2].argval if index >= 2 else 0
            if isinstance(level, int) and level > 0:
                continue  # ``from . import x``: a module of the caller's own package
            name = str(instruction.argval)
            self._module(name)
            if not any(start <= instruction.offset < end for start, end in guarded):
                self.imports.add(name)
        return nested


def _try_blocks(bytecode: dis.Bytecode, instructions: list[dis.Instruction]) -> list[tuple[int, int]]:
    """Offset ranges inside a ``try`` block: an import there (``try: import x`` / ``except ImportError``) may be
    meant to fail. A ``with`` block's handler only cleans up, so its body is not one."""
    position = {instruction.offset: index for index, instruction in enumerate(instructions)}
    blocks = []
    for entry in bytecode.exception_entries:
        handler = position.get(entry.target)
        following = instructions[handler + 1].opname if handler is not None and handler + 1 < len(instructions) else ""
        if following != "WITH_EXCEPT_START":
            blocks.append((entry.start, entry.end))
    return blocks


def _has_contents(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> set[str]:
    """Names a function's code (and its nested code) looks up as globals or attributes."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _is_local_module(name: str) -> bool:
    """The caller's own code: ``__main__`` or a module loaded from outside the library directories."""
    if name == "__main__":
        return True
    module = sys.modules.get(name)
    return module is not None and bool(getattr(module, "__file__", None)) and not _is_installed_module(module)


def _by_value(obj: Any) -> bool:
    """Whether cloudpickle ships ``obj``'s code (so its own references matter) rather than its name."""
    return _is_local_module(getattr(obj, "__module__", "") or "") or "<locals>" in getattr(obj, "__qualname__", "")


def referenced_modules(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> set[str]:
    """Dotted names of every module the call imports or references, the caller's own included."""
    return walk_call(fn, args, kwargs).referenced


def walk_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallModules:
    """The modules a call references and the ``import`` statements its job will run."""
    walker = _Walker()
    referenced = walker.walk([fn, args, kwargs])
    return CallModules(referenced=referenced, imported=walker.imports)


def not_importable_here(imported: Iterable[str]) -> list[str]:
    """Top-level names among ``imported`` that this interpreter cannot import (sorted)."""
    installed_state()
    missing: set[str] = set()
    for name in imported:
        top = name.partition(".")[0]
        if not top or top in sys.modules or top in sys.stdlib_module_names or top in sys.builtin_module_names:
            continue
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = True  # it exists but would not say how: leave it to the job
        if not found:
            missing.add(top)
    return sorted(missing)


def site_fingerprint() -> str:
    """Changes when a distribution is installed or removed: the mtimes of the ``*-packages``
    directories on ``sys.path`` (source directories on it change all the time and hold none)."""
    digest = hashlib.sha256(sys.executable.encode())
    for entry in sys.path:
        if not entry.rstrip("/").endswith(("site-packages", "dist-packages")):
            continue
        try:
            digest.update(f"{entry}:{os.stat(entry).st_mtime_ns}".encode())
        except OSError:
            continue
    return digest.hexdigest()[:16]


_seen_state = ""


def installed_state() -> str:
    """The site fingerprint now; when it changed since the last look (a package was installed or
    removed meanwhile), the import system's and ``importlib.metadata``'s directory caches are
    dropped first, so imports and distribution lookups see the new files."""
    global _seen_state
    fingerprint = site_fingerprint()
    if fingerprint != _seen_state:
        importlib.invalidate_caches()
        _seen_state = fingerprint
    return fingerprint


def module_distributions() -> dict[str, list[str]]:
    """``packages_distributions()`` of the site-packages as they are now."""
    return _module_distributions(installed_state())


@functools.lru_cache(maxsize=4)
def _module_distributions(fingerprint: str) -> dict[str, list[str]]:
    """Cached in memory and on disk per site fingerprint (it scans every distribution's file list,
    a few hundred milliseconds in a large environment)."""
    cache = settings.cache_dir() / "environments" / f"distributions-{fingerprint}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    mapping = {name: sorted(set(dists)) for name, dists in metadata.packages_distributions().items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # threads race to the first write
    temporary.write_text(json.dumps(mapping))
    os.replace(temporary, cache)
    return mapping


def _owning_distribution(module_name: str, candidates: list[str]) -> str | None:
    """Which of several distributions sharing a top-level name ships ``module_name``'s file."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        return None
    target = Path(path).resolve()
    for name in candidates:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for file in distribution.files or ():
            if file.name == target.name and Path(str(distribution.locate_file(file))).resolve() == target:
                return name
    return None


def distributions_of(modules: Iterable[str]) -> dict[str, set[str]]:
    """Installed third-party distributions behind ``modules``: ``{distribution: {module, ...}}``.

    Leaves out the standard library, the runner's own dependencies and the
    caller's local code.
    """
    mapping = module_distributions()
    found: dict[str, set[str]] = {}
    for name in sorted(modules):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == "__main__" or top not in mapping:
            continue
        module = sys.modules.get(top)
        if module is not None and getattr(module, "__file__", None) and not _is_installed_module(module):
            continue  # an editable or path install: the caller's code, pickled by value
        candidates = mapping[top]
        if len(candidates) > 1:
            owner = _owning_distribution(name, candidates)
            if owner is None:
                continue  # a namespace package itself: what is used below it is walked separately
            candidates = [owner]
        distribution = candidates[0]
        if canonicalize_name(distribution) in RUNNER_DISTRIBUTIONS:
            continue
        found.setdefault(distribution, set()).add(name)
    return found
