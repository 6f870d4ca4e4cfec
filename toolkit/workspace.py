"""The Pulumi workspace every toolkit stack gets, and the backend operations beside it.

Run stacks (``toolkit.engine``) and environment stacks (``toolkit.environments``)
share one description of a workspace (project, backend, secrets provider, CLI,
environment), one ``PulumiCommand`` per process (it runs ``pulumi version`` when
built), and the same ways to list a project's stacks with their tags, remove a
stack, and break the lock a dead client left. Stack owners (``host:pid:start``)
are judged here too: a lock or a stack is stale only when its owner is gone.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import fsspec
from pulumi import automation as auto

from toolkit import diy_backend, settings
from toolkit.providers import resident
from toolkit.providers.local_process import start_time
from toolkit.toolchain import cli_lookup
from toolkit.toolchain.pulumi_env import pulumi_env


def current_user() -> str:
    """``user@host``: who a run, an action or a pool's publication is recorded as."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return f"?@{socket.gethostname()}"


def owner_tag(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{start_time(pid)}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner (``owner_tag``) on this host; None when it runs elsewhere (unknowable)."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return start_time(pid) == started


@functools.cache
def pulumi_command() -> auto.PulumiCommand:
    """The Pulumi CLI, found and checked once per process against the SDK's minimum version."""
    return cli_lookup.automation_command()


def workspace_options(
    backend_url: str,
    work_dir: Path,
    *,
    project: str = settings.RUN_PROJECT,
    secrets_provider: str | None = None,
    program: Callable[[], None] | None = None,
) -> auto.LocalWorkspaceOptions:
    """The one place a stack's workspace is described: project, backend, secrets provider, CLI, program.

    ``secrets_provider`` applies to stacks created here (the pool's, else ``TOOLKIT_SECRETS_PROVIDER``).
    The CLI attaches to this process's ``toolkit`` provider (``providers/resident.py``).
    """
    return auto.LocalWorkspaceOptions(
        work_dir=str(work_dir),
        program=program,
        project_settings=auto.ProjectSettings(
            name=project, runtime="python", backend=auto.ProjectBackend(url=backend_url)
        ),
        secrets_provider=secrets_provider or settings.secrets_provider(),
        env_vars={**pulumi_env(backend_url), **resident.attach_env()},
        pulumi_command=pulumi_command(),
    )


def ensure_local_backend(backend_url: str) -> None:
    """A ``file://`` backend directory must exist before the CLI logs into it."""
    if backend_url.startswith("file://"):
        Path(backend_url[len("file://") :]).mkdir(parents=True, exist_ok=True)
        diy_backend.ensure_layout(backend_url)


def remove_stack(name: str, backend_url: str, work_dir: Path) -> None:
    """``pulumi stack rm --remove-backups``: the Automation API's remove_stack keeps
    checkpoint backups (``*.json.bak``), which would outlive every run stack."""
    pulumi_command().run(
        ["stack", "rm", "--yes", "--remove-backups", name], str(work_dir), pulumi_env(backend_url)
    )


def list_stacks(backend_url: str, project: str) -> list[tuple[str, dict[str, str]]]:
    """Every stack of ``project`` in ``backend_url`` with its tags."""
    ensure_local_backend(backend_url)
    work_dir = Path(tempfile.mkdtemp(prefix="toolkit-ls-"))
    try:
        options = workspace_options(backend_url, work_dir, project=project)
        workspace = auto.LocalWorkspace(
            work_dir=options.work_dir,
            env_vars=options.env_vars,
            secrets_provider=options.secrets_provider,
            project_settings=options.project_settings,
            pulumi_command=options.pulumi_command,
        )
        names = [summary.name for summary in workspace.list_stacks()]
        tagged = ((name, _tags_if_present(workspace, name)) for name in names)
        return [(name, tags) for name, tags in tagged if tags is not None]
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _tags_if_present(workspace: auto.LocalWorkspace, name: str) -> dict[str, str] | None:
    """The stack's tags, or None if it was removed since the listing (a run finishing meanwhile)."""
    try:
        return workspace.list_tags(name)
    except auto.errors.StackNotFoundError:
        return None


def break_stale_lock(stack: str, backend_url: str, project: str = settings.RUN_PROJECT) -> list[str]:
    """Remove lock files of ``stack`` held by processes that no longer exist; returns what it removed."""
    # Backend URLs carry gocloud query options (?endpoint=...&region=...) that fsspec does not
    # understand; fsspec clients take those from the environment (AWS_ENDPOINT_URL, ...).
    fs, root = fsspec.core.url_to_fs(backend_url.split("?", 1)[0])
    directory = f"{root.rstrip('/')}/.pulumi/locks/organization/{project}/{stack}"
    removed: list[str] = []
    if not fs.exists(directory):
        return removed
    paths = fs.ls(directory, detail=False)
    for path in paths:
        if path.endswith(diy_backend.ATTRS):
            continue
        try:
            lock = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            continue
        owner = f"{lock.get('hostname')}:{lock.get('pid')}:{start_time(int(lock.get('pid', 0)))}"
        if lock.get("hostname") == socket.gethostname() and owner_alive(owner) is not True:
            fs.rm(path)
            removed.append(path)
            if path + diy_backend.ATTRS in paths:  # the CLI's blob store writes one beside each lock file
                fs.rm(path + diy_backend.ATTRS)
    return removed
