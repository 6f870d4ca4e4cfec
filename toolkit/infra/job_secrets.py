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

from collections.abc import Mapping

import pulumi

from toolkit.providers.secrets_file import SECRETS_NAME, numeric_owner, write
from toolkit.runner import RUN_KEY_ENV
from toolkit.secretvalues import Secret

__all__ = ["SECRETS_NAME", "numeric_owner", "plain_env", "secret_inputs", "worker_secrets_name", "write"]


def worker_secrets_name(number: int) -> str:
    """The secrets file of a map's worker ``number``: each worker reads and deletes its own."""
    return f"secrets-{number}.json"


def secret_inputs(run_key: str, env: Mapping[str, object]) -> dict[str, pulumi.Output[str]]:
    """The run key and every ``Secret`` env value, each as a Pulumi secret (names stay readable)."""
    values = {name: value.reveal() for name, value in env.items() if isinstance(value, Secret)}
    values[RUN_KEY_ENV] = run_key
    return {name: pulumi.Output.secret(value) for name, value in values.items()}


def plain_env(env: Mapping[str, object]) -> dict[str, str]:
    """The env values that are not secret: they may travel in the job's environment."""
    return {name: value for name, value in env.items() if isinstance(value, str)}
