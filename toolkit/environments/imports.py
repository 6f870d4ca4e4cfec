"""Every module a call's job will import exists on one side: installed here, or in the job's base or environment.

Auto-detection ships what is installed here, so a module the function imports
that this interpreter cannot import reaches the job only if the job's base
already has it or an explicit requirement (``packages=``, ``requirements=``)
installs it. Anything else would fail inside the job with
``ModuleNotFoundError`` after the run's stack went up; this check fails the
call before that, naming the module and the two ways to fix it. Imports inside
a ``try`` block are left out (``detect.walk_call``): they may be meant to fail.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from toolkit.environments.base import Base
from toolkit.environments.spec import Environment
from toolkit.errors import MissingModuleError


def wheel_modules(path: Path) -> set[str] | None:
    """Top-level modules a wheel installs, from its file list (None: the wheel is not there to read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    modules: set[str] = set()
    for name in names:
        parts = name.split("/")
        if parts[0].endswith(".dist-info"):
            continue
        if parts[0].endswith(".data"):  # <name>.data/purelib/<module>/... installs like the wheel's root
            if len(parts) < 4 or parts[1] not in ("purelib", "platlib"):
                continue
            parts = parts[2:]
        top = parts[0]
        if len(parts) == 1:  # a module file at the root: pkg.py, _speed.cpython-311-x86_64-linux-gnu.so
            if not top.endswith((".py", ".so", ".pyd")):
                continue
            top = top.partition(".")[0]
        modules.add(top)
    return modules


def _environment_modules(environment: Environment | None, wheelhouse: Path) -> set[str] | None:
    """Modules the environment's wheels install (None when a wheel cannot be read: then nothing is refused)."""
    found: set[str] = set()
    for pin in environment.pins if environment else ():
        modules = wheel_modules(wheelhouse / pin.wheel)
        if modules is None:
            return None
        found |= modules
    return found


def check_available(
    function: str, missing_here: Iterable[str], base: Base, environment: Environment | None, wheelhouse: Path
) -> None:
    """Refuse a call whose job would import a module that neither this interpreter nor the job has."""
    missing_here = sorted(missing_here)
    if not missing_here:
        return
    installed = _environment_modules(environment, wheelhouse)
    if installed is None:
        return
    available = set(base.modules) | installed
    missing = [name for name in missing_here if name not in available]
    if not missing:
        return
    names = ", ".join(repr(name) for name in missing)
    it = "it" if len(missing) == 1 else "them"
    if base.is_caller:
        lacking = f"which this interpreter ({sys.executable}), the one the job runs, cannot import"
    else:
        lacking = f"which neither this interpreter ({sys.executable}) nor the job's {base.kind} {base.describe()} has"
    raise MissingModuleError(
        f"{function} imports {names}, {lacking}: the job would fail with ModuleNotFoundError. Install {it} "
        f"here (`{sys.executable} -m pip install {' '.join(missing)}`, with the distribution's name if it "
        f"differs) and the call ships {it}, or name the distribution in packages=[...] for the job alone"
    )
