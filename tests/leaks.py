"""What a run may leave behind, checked after every engine test: nothing.

Containers are counted for this test session's runs only (their ``toolkit-run``
label against the run records under ``TOOLKIT_HOME``), so a second session on
the same Docker engine neither hides nor causes a failure here.

Every probe fails loudly: a probe that cannot look (``docker ps`` erroring, the
backend unreadable) raises ``LeakProbeError`` instead of reporting nothing,
because "could not check" must never read as "nothing left".

A test whose runs use a backend of their own (a pool's ``backend_url``) or a
``TOOLKIT_HOME`` of their own (a client in a fresh venv) names them: the
probes look there instead of at the session's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from toolkit import diy_backend, settings
from toolkit.engine import list_run_stacks


class LeakProbeError(AssertionError):
    """A leak check could not look where it had to; the test fails rather than pass unchecked."""


def no_stack_ever_made(backend_url: str, project: str = settings.RUN_PROJECT) -> bool:
    """A ``file://`` backend holding no stack file of ``project`` (none ever, or all removed): nothing to ask the CLI.

    Lets the bad-input tests check that nothing was provisioned on a machine without the Pulumi CLI (the fast lane),
    also after an earlier module made and removed stacks.
    """
    directory = diy_backend.stacks_dir(backend_url, project)
    if directory is None:
        return False
    return not any(path.name.endswith((".json", ".json.gz")) for path in directory.glob("*"))


def run_stacks(backend_url: str | None = None) -> list[str]:
    backend_url = backend_url or settings.default_backend_url()
    if no_stack_ever_made(backend_url):
        return []
    try:
        return [name for name, _tags in list_run_stacks(backend_url)]
    except Exception as exc:
        raise LeakProbeError(f"could not list the run stacks in {backend_url}: {exc}") from exc


def _runs_dir(home: Path | None) -> Path:
    return home / "runs" if home else settings.runs_dir()


def session_run_ids(home: Path | None = None) -> set[str]:
    runs = _runs_dir(home)
    return {path.name for path in runs.iterdir()} if runs.exists() else set()


CONTAINER_TARGETS = frozenset({"docker"})
"""Targets whose jobs are containers on this machine's Docker engine: the only runs ``docker ps`` can show."""


def session_container_runs(home: Path | None = None) -> set[str]:
    """This session's run ids that may have containers: its docker runs, and any whose record cannot be read.

    A session that made no docker run needs no Docker engine to be checked, so its tests do not
    ask one that another worker's test is restarting (tests/parallel.py)."""
    runs = _runs_dir(home)
    found = set()
    for run_id in session_run_ids(home):
        try:
            target = json.loads((runs / run_id / "record.json").read_text())["target"]
        except (OSError, ValueError, KeyError):
            target = None  # being written, or a run directory without a record: look all the same
        if target is None or target in CONTAINER_TARGETS:
            found.add(run_id)
    return found


def session_containers(home: Path | None = None) -> list[str]:
    """Names of containers (running or not) labelled with one of this session's run ids."""
    ours = session_container_runs(home)
    if not ours:
        return []  # no docker run was recorded, so no container can be one of ours (and no Docker engine is needed)
    command = ["docker", "ps", "-a", "--filter", "label=toolkit-run", "--format", '{{.Names}} {{.Label "toolkit-run"}}']
    try:
        docker = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LeakProbeError(f"`{' '.join(command[:3])}` could not run: {exc}") from exc
    if docker.returncode != 0:
        raise LeakProbeError(f"`docker ps` failed (exit {docker.returncode}): {docker.stderr.strip()}")
    return [line.split()[0] for line in docker.stdout.splitlines() if line.split()[-1] in ours]


def _names(home: Path, directory_name: str) -> list[str]:
    directory = home / directory_name
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def stack_bookkeeping(stacks: list[str], backend_url: str | None = None) -> list[str]:
    """History and lock directories the CLI made for run stacks that no longer exist."""
    live = set(stacks)
    return sorted(
        str(path)
        for parent in diy_backend.bookkeeping_dirs(backend_url or settings.default_backend_url(), settings.RUN_PROJECT)
        if parent.is_dir()
        for path in parent.iterdir()
        if path.name not in live
    )


def leftovers(backend_url: str | None = None, home: Path | None = None, containers: bool = True) -> dict[str, list[str]]:
    """Stacks in the backend and their bookkeeping, run directories, staged bundles, toolkit containers.

    ``backend_url`` defaults to the session's backend, ``home`` to its ``TOOLKIT_HOME``; a home
    of its own has its own default backend (``<home>/state``). ``containers=False``: runs that
    used no Docker engine, none to ask.
    """
    if home is not None and backend_url is None:
        backend_url = f"file://{home / 'state'}"
    home = home or settings.home()
    stacks = run_stacks(backend_url)
    found = {
        "stacks": stacks,
        "stack history and lock directories": stack_bookkeeping(stacks, backend_url),
        "run directories": _names(home, "work"),
        "staged bundles": _names(home, "staging"),
        "containers": session_containers(home) if containers else [],
    }
    return {kind: items for kind, items in found.items() if items}


def assert_nothing_left(backend_url: str | None = None, home: Path | None = None) -> None:
    left = leftovers(backend_url, home)
    assert not left, f"runs left things behind: {left}"
