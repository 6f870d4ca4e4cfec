"""The local family (process, docker): jobs on this machine, their secrets in a file only the job can read.

Environment variables of a process are readable through ``/proc/<pid>/environ``
for its whole life, and a container's are shown by ``docker inspect`` to anyone
who may list containers. So a job on this machine never gets secrets there: the
run storage's create step writes them as JSON into the run directory, mode 0600
and owned by the job's user (``toolkit.providers.secrets_file``), and the runner
(``--secrets PATH``) loads them into ``os.environ`` and deletes the file before it
calls the function. The values reach the file only through Pulumi secrets
(encrypted in state, ``[secret]`` in previews). The "bucket" is the run
directory itself, ``RunStorage`` at ``$TOOLKIT_HOME/work/<run-id>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pulumi

from toolkit import settings
from toolkit.infra.flow import MapForm, Platform, SecretReferences, run_secrets
from toolkit.infra.run import RunContext
from toolkit.providers.secrets_file import SECRETS_NAME
from toolkit.secretvalues import Secret


def work_dir() -> str:
    """Where run directories live (0700: the private parent keeps a run directory's files private)."""
    work = settings.home() / "work"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    return str(work)


def run_directory(run_id: str) -> str:
    """A run's directory: its storage, bundle in and result out, removed with its stack."""
    return str(settings.home() / "work" / run_id)


def secrets_name(form: MapForm, worker: int) -> str:
    """The secrets file of ``worker``: a map's workers each read and delete their own."""
    return SECRETS_NAME if form.fanout is None else f"secrets-{worker}.json"


def plain_env(env: Mapping[str, object]) -> dict[str, str]:
    """The env values that are not secret: they may travel in the job's environment."""
    return {name: value for name, value in env.items() if not isinstance(value, Secret)}  # type: ignore[misc]


class LocalPlatform(Platform):
    """Run storage is the run directory; the run's secrets go into it as one file per worker."""

    storage_name = "run-directory"

    def __init__(self, run: RunContext, form: MapForm, mode: str = "700", owner: str | None = None) -> None:
        work_dir()
        self._run = run
        self._form = form
        self._mode = mode
        self._owner = owner

    def run_storage_settings(self) -> dict[str, Any]:
        values = {name: pulumi.Output.secret(value) for name, value in run_secrets(self._run).items()}
        names = [secrets_name(self._form, worker) for worker in range(self._form.workers)]
        settings_: dict[str, Any] = {"secrets": values, "attempt": self._run.attempt}
        if self._mode != "700":
            settings_["mode"] = self._mode
        if self._owner is not None:
            settings_["secrets_owner"] = self._owner
        if self._form.fanout is not None:
            settings_["secrets_names"] = names
        return settings_

    def secret_references(self, values: Mapping[str, str], identity: Any) -> SecretReferences:
        """The secrets file each worker reads (its values were written with the run directory)."""
        return SecretReferences({str(worker): secrets_name(self._form, worker) for worker in range(self._form.workers)})
