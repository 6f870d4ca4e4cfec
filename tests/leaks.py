"""What a run may leave behind, checked after every engine test: nothing.

Containers are counted for this test session's runs only (their ``toolkit-run``
label against the run records under ``TOOLKIT_HOME``), so a second session on
the same Docker engine neither hides nor causes a failure here.

Every probe fails loudly: a probe that cannot look (``docker ps`` erroring, the
backend unreadable) raises ``LeakProbeError`` instead of reporting nothing,
because "could not check" must never read as "nothing left".
"""

from __future__ import annotations

import subprocess

from toolkit import diy_backend, settings
from toolkit.engine import list_run_stacks


class LeakProbeError(AssertionError):
    """A leak check could not look where it had to; the test fails rather than pass unchecked."""


def run_stacks() -> list[str]:
    try:
        return [name for name, _tags in list_run_stacks(settings.default_backend_url())]
    except Exception as exc:
        raise LeakProbeError(f"could not list the run stacks in {settings.default_backend_url()}: {exc}") from exc


def session_run_ids() -> set[str]:
    runs = settings.runs_dir()
    return {path.name for path in runs.iterdir()} if runs.exists() else set()


def session_containers() -> list[str]:
    """Names of containers (running or not) labelled with one of this session's run ids."""
    command = ["docker", "ps", "-a", "--filter", "label=toolkit-run", "--format", '{{.Names}} {{.Label "toolkit-run"}}']
    try:
        docker = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LeakProbeError(f"`{' '.join(command[:3])}` could not run: {exc}") from exc
    if docker.returncode != 0:
        raise LeakProbeError(f"`docker ps` failed (exit {docker.returncode}): {docker.stderr.strip()}")
    ours = session_run_ids()
    return [line.split()[0] for line in docker.stdout.splitlines() if line.split()[-1] in ours]


def _names(directory_name: str) -> list[str]:
    directory = settings.home() / directory_name
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def stack_bookkeeping(stacks: list[str]) -> list[str]:
    """History and lock directories the CLI made for run stacks that no longer exist."""
    live = set(stacks)
    return sorted(
        str(path)
        for parent in diy_backend.bookkeeping_dirs(settings.default_backend_url(), settings.RUN_PROJECT)
        if parent.is_dir()
        for path in parent.iterdir()
        if path.name not in live
    )


def leftovers() -> dict[str, list[str]]:
    """Stacks in the backend and their bookkeeping, run directories, staged bundles, toolkit containers."""
    stacks = run_stacks()
    found = {
        "stacks": stacks,
        "stack history and lock directories": stack_bookkeeping(stacks),
        "run directories": _names("work"),
        "staged bundles": _names("staging"),
        "containers": session_containers(),
    }
    return {kind: items for kind, items in found.items() if items}


def assert_nothing_left() -> None:
    left = leftovers()
    assert not left, f"runs left things behind: {left}"
