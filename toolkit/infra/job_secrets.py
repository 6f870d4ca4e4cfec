"""A local job's secrets (the run key and secret env values) as a file only the job's user can read.

Environment variables of a process are readable through ``/proc/<pid>/environ``
for its whole life, and a container's are shown by ``docker inspect`` to anyone
who may list containers. So the targets whose job runs on this machine
(process, docker) never put secrets there: the run storage's create step
writes them as JSON into the run directory, mode 0600 and owned by the job's
user, and the runner (``--secrets PATH``) loads them into ``os.environ`` and
deletes the file before it calls the function. The values reach the file
only through Pulumi secrets (encrypted in state, ``[secret]`` in previews).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import pulumi

from toolkit.runner import RUN_KEY_ENV
from toolkit.secretvalues import Secret

SECRETS_NAME = "secrets.json"
"""The file's name in the run directory."""


def secret_inputs(run_key: str, env: Mapping[str, object]) -> dict[str, pulumi.Output[str]]:
    """The run key and every ``Secret`` env value, each as a Pulumi secret (names stay readable)."""
    values = {name: value.reveal() for name, value in env.items() if isinstance(value, Secret)}
    values[RUN_KEY_ENV] = run_key
    return {name: pulumi.Output.secret(value) for name, value in values.items()}


def plain_env(env: Mapping[str, object]) -> dict[str, str]:
    """The env values that are not secret: they may travel in the job's environment."""
    return {name: value for name, value in env.items() if isinstance(value, str)}


def numeric_owner(user: str) -> tuple[int, int]:
    """``'1000:1000'`` -> ``(1000, 1000)``; ``'1000'`` -> ``(1000, -1)`` (group left as created)."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid) if gid else -1


def write(directory: str, values: Mapping[str, str], owner: str | None) -> str:
    """Write ``values`` to ``directory/secrets.json``, 0600, owned by ``owner`` ('uid[:gid]').

    Created with ``O_EXCL`` and the final mode, so no moment exists in which
    another user could open it. Handing the file to another uid needs root; a
    client that is not root writes it as itself, and the target's preflight has
    checked that the job runs under that same uid.
    """
    path = os.path.join(directory, SECRETS_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *numeric_owner(owner))
        with os.fdopen(fd, "w", closefd=False) as handle:
            json.dump(dict(values), handle)
    finally:
        os.close(fd)
    return path
