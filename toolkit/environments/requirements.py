"""What a call asks for, and where each requirement came from.

Three sources, each entry remembering its own: ``auto`` (a distribution the
pickled call uses, pinned to the caller's installed version, with the
installed closure of its dependencies), ``packages`` (the job variable) and
``requirements`` (a file). An explicit requirement for a distribution replaces
the automatic pin of the same name, so a user can always override what was
detected. Contradictory explicit pins are refused here, before any index is
asked.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict

from toolkit.errors import ConfigError, RequirementConflictError

Source = Literal["auto", "packages", "requirements"]


class Requested(BaseModel):
    """One requirement of a call's environment."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Canonical distribution name."""
    requirement: str
    """PEP 508 text, e.g. ``humanize==4.12.1`` or ``numpy>=2``."""
    source: Source
    origin: str
    """Where exactly: ``import humanize``, ``dependency of pandas``, ``packages[0]``, ``reqs.txt:3``."""


def _parse(text: str, origin: str, source: Source) -> Requested:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise ConfigError(
            f"{origin}: {text!r} is not a valid requirement ({exc}). Use PEP 508, e.g. 'numpy>=2' or 'pandas==2.2.3'"
        ) from None
    if requirement.url:
        raise ConfigError(
            f"{origin}: {text!r} names a URL; jobs install from wheels resolved on this machine's index. Build "
            "the wheel, put it in a wheelhouse (PIP_FIND_LINKS) and name the distribution instead"
        )
    return Requested(name=canonicalize_name(requirement.name), requirement=str(requirement), source=source, origin=origin)


def from_packages(packages: Iterable[str]) -> list[Requested]:
    return [_parse(text, f"packages[{index}]", "packages") for index, text in enumerate(packages)]


def from_file(name: str, cwd: Path) -> list[Requested]:
    """Requirement lines of a requirements file (``-r`` includes followed); pip options are refused."""
    return _read_file(cwd / name, name, cwd, set())


def _read_file(path: Path, shown: str, cwd: Path, seen: set[Path]) -> list[Requested]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ConfigError(
            f"requirements file {shown!r} not found (looked for {path}); paths are relative to the caller's "
            "working directory"
        ) from None
    seen.add(path.resolve())
    found: list[Requested] = []
    for number, raw in enumerate(lines, start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        origin = f"{shown}:{number}"
        if not line:
            continue
        include = re.match(r"^(-r|--requirement)\s*=?\s*(\S+)$", line)
        if include:
            nested = (path.parent / include.group(2)).resolve()
            if nested not in seen:
                found += _read_file(nested, include.group(2), cwd, seen)
            continue
        if line.startswith("-"):
            raise ConfigError(
                f"{origin}: pip option {line.split()[0]!r} is not supported in a job's requirements file. "
                "Configure indexes and wheelhouses for pip itself (pip.conf, PIP_INDEX_URL, PIP_FIND_LINKS): "
                "the toolkit resolves with the caller's pip configuration"
            )
        found.append(_parse(line, origin, "requirements"))
    return found


@functools.cache
def _requires(name: str, version: str) -> tuple[str, ...]:
    return tuple(metadata.requires(name) or ())


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_closure(roots: Mapping[str, set[str]], environment: Mapping[str, str]) -> list[Requested]:
    """``roots`` (distribution -> modules the call uses) and their dependencies, pinned to what is
    installed here; markers are evaluated for the job's ``environment``, extras' needs left out.

    A dependency the job's platform needs that this interpreter does not have
    (``async-timeout; python_full_version < '3.11.3'`` asked by a 3.11.2 image
    of a 3.11.9 caller) is asked for with its own specifier: pip evaluates
    markers for the interpreter it runs on, not for ``--python-version``, so it
    would not add it by itself.
    """
    pinned: dict[str, Requested] = {}
    missing: dict[str, Requested] = {}
    pending: list[tuple[str, str, str]] = [
        (name, "import " + ", ".join(sorted(modules)), "") for name, modules in sorted(roots.items())
    ]
    marker_env = {**environment, "extra": ""}
    while pending:
        name, origin, specifier = pending.pop(0)
        key = canonicalize_name(name)
        if key in pinned:
            continue
        version = _installed_version(name)
        if version is None:
            missing.setdefault(key, Requested(name=key, requirement=f"{key}{specifier}", source="auto",
                                              origin=f"{origin} (for the job's platform; not installed here)"))
            continue
        pinned[key] = Requested(name=key, requirement=f"{key}=={version}", source="auto", origin=origin)
        for text in _requires(name, version):
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate(marker_env):
                continue
            pending.append((requirement.name, f"dependency of {key}", str(requirement.specifier)))
    return list(pinned.values()) + [item for key, item in missing.items() if key not in pinned]


def combine(auto: list[Requested], explicit: list[Requested]) -> list[Requested]:
    """Explicit requirements win over automatic pins of the same distribution; explicit pins must agree."""
    check_pins(explicit)
    named = {item.name for item in explicit}
    return [item for item in auto if item.name not in named] + explicit


def check_pins(items: list[Requested]) -> None:
    """Refuse two requirements that no single version satisfies, where an exact pin shows it."""
    by_name: dict[str, list[tuple[Requested, Requirement]]] = {}
    for item in items:
        by_name.setdefault(item.name, []).append((item, Requirement(item.requirement)))
    for name, entries in by_name.items():
        for pinned, requirement in entries:
            exact = [spec.version for spec in requirement.specifier if spec.operator in ("==", "===") and "*" not in spec.version]
            for version in exact:
                for other, other_requirement in entries:
                    if other is pinned:
                        continue
                    try:
                        allowed = other_requirement.specifier.contains(Version(version), prereleases=True)
                    except InvalidVersion:
                        allowed = True
                    if not allowed:
                        raise RequirementConflictError(
                            f"conflicting pins for {name!r}: {pinned.requirement!r} ({pinned.source}, {pinned.origin}) "
                            f"and {other.requirement!r} ({other.source}, {other.origin}). Keep one of them"
                        )


def satisfied_by(item: Requested, installed_version: str | None, environment: Mapping[str, str]) -> bool:
    """Whether a base that has ``installed_version`` of the distribution already meets ``item``."""
    requirement = Requirement(item.requirement)
    if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": ""}):
        return True  # not wanted on the job's platform at all
    if installed_version is None:
        return False
    try:
        return requirement.specifier.contains(Version(installed_version), prereleases=True)
    except InvalidVersion:
        return False
