"""The secrets file of a job on this machine: written by run storage's provider, 0600, owned by the job's user.

Standard library only: it runs inside the dynamic-provider plugin, on every
run's critical path (see ``toolkit/providers/__init__.py``). Why a file and not
the environment: ``toolkit/targets/local.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

SECRETS_NAME = "secrets.json"
"""The file's name in the run directory."""


def numeric_owner(user: str) -> tuple[int, int]:
    """``'1000:1000'`` -> ``(1000, 1000)``; ``'1000'`` -> ``(1000, -1)`` (group left as created)."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid) if gid else -1


def write(directory: str, values: Mapping[str, str], owner: str | None, name: str = SECRETS_NAME) -> str:
    """Write ``values`` to ``directory/<name>``, 0600, owned by ``owner`` ('uid[:gid]').

    Created with ``O_EXCL`` and the final mode, so no moment exists in which
    another user could open it. Handing the file to another uid needs root; a
    client that is not root writes it as itself, and the target's preflight has
    checked that the job runs under that same uid.
    """
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *numeric_owner(owner))
        with os.fdopen(fd, "w", closefd=False) as handle:
            json.dump(dict(values), handle)
    finally:
        os.close(fd)
    return path
