"""The environment every Pulumi CLI call gets: non-interactive, the toolkit's binaries first.

Automatic plugin acquisition stays Pulumi's default unless the toolkit is
offline (``toolkit.toolchain.offline``), where it could only fail slowly. The
passphrase of the ``passphrase`` secrets provider comes from here too, and
where the client's key service for run stacks listens (``stack_key``).
"""

from __future__ import annotations

import os
import secrets
import sys

from toolkit import settings
from toolkit.toolchain import offline, stack_key

HOST_PYTHON_ENV = "TOOLKIT_PYTHON"
"""The interpreter the toolkit's language host runs on, for the CLI processes a toolkit process starts.

The host's shim lives in the per-user bin directory that every virtualenv with the toolkit shares; the
interpreter written into it is only the last installer's, which is what a plain ``pulumi`` command of
the pools-as-code project gets."""


def _passphrase() -> str:
    """The passphrase of the secrets provider: env if set, else a per-user random one.

    Generated once and kept 0600 under ``TOOLKIT_HOME`` so local state is
    encrypted without asking the user for anything.
    """
    explicit = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
    if explicit is not None:
        return explicit
    path = settings.home() / "passphrase"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def pulumi_env(backend_url: str | None = None) -> dict[str, str]:
    """Environment for every Pulumi CLI call (``backend_url``: the state backend it logs into)."""
    path = os.pathsep.join([str(settings.bin_dir()), os.environ.get("PATH", "")])
    passphrase = _passphrase()
    env = {
        "PATH": path,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_CONFIG_PASSPHRASE": passphrase,
        # Run stacks keep their key with the client's key service (stack_key), for every CLI process.
        **stack_key.env(passphrase),
        # Dynamic providers run in this interpreter, so they see the same packages.
        "PULUMI_PYTHON_CMD": sys.executable,
        # And the toolkit's language host: the shim in the shared bin directory names only a default.
        HOST_PYTHON_ENV: sys.executable,
        # Run stacks live for one call; backups of their checkpoints only leave files behind.
        "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
    }
    if offline.is_offline():
        env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    if backend_url:
        env["PULUMI_BACKEND_URL"] = backend_url
    return env
