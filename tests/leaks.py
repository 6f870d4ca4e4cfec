"""What a run may leave behind, checked after every engine test: nothing.

Containers are counted for this test session's runs only (their ``toolkit-run``
label against the run records under ``TOOLKIT_HOME``), so a second session on
the same Docker engine neither hides nor causes a failure here.
"""

from __future__ import annotations

import subprocess

from toolkit import settings
from toolkit.engine import list_run_stacks


def run_stacks() -> list[str]:
    return [name for name, _tags in list_run_stacks(settings.default_backend_url())]


def session_run_ids() -> set[str]:
    runs = settings.runs_dir()
    return {path.name for path in runs.iterdir()} if runs.exists() else set()


def leftovers() -> dict[str, list[str]]:
    """Stacks in the backend, run directories, staged bundles, toolkit containers."""
    home = settings.home()
    found = {
        "stacks": run_stacks(),
        "run directories": sorted(p.name for p in (home / "work").glob("*")) if (home / "work").exists() else [],
        "staged bundles": sorted(p.name for p in (home / "staging").glob("*")) if (home / "staging").exists() else [],
    }
    docker = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=toolkit-run", "--format", '{{.Names}} {{.Label "toolkit-run"}}'],
        capture_output=True, text=True,
    )
    ours = session_run_ids()
    found["containers"] = (
        [line.split()[0] for line in docker.stdout.splitlines() if line.split()[-1] in ours]
        if docker.returncode == 0 else []
    )
    return {kind: items for kind, items in found.items() if items}


def assert_nothing_left() -> None:
    left = leftovers()
    assert not left, f"runs left things behind: {left}"
