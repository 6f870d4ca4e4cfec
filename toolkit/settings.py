"""Where the toolkit keeps things, and the environment every Pulumi call gets.

One place decides paths (``TOOLKIT_HOME``, the cache, the state backend) so
the CLI, the engine, the toolchain installer and ``doctor`` agree on them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from toolkit._version import __version__

RUN_PROJECT = "toolkit-runs"
"""Pulumi project that holds every ephemeral run stack."""
ENV_PROJECT = "toolkit-envs"
"""Pulumi project that holds the long-lived environment stacks (``env-<hash>``)."""


def home() -> Path:
    """``TOOLKIT_HOME`` (default ``~/.toolkit``): pools, run records, local state."""
    return Path(os.environ.get("TOOLKIT_HOME") or Path.home() / ".toolkit").expanduser().absolute()


def cache_dir() -> Path:
    """Built binaries and images' inputs (``~/.cache/toolkit``), reused across runs."""
    explicit = os.environ.get("TOOLKIT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().absolute() / "toolkit"


def bin_dir() -> Path:
    """Toolchain binaries built or installed by ``toolkit toolchain install``."""
    return cache_dir() / "bin"


def pools_url() -> str:
    """fsspec URL of the pool registry (``TOOLKIT_POOLS_URL`` or ``$TOOLKIT_HOME/pools``)."""
    return os.environ.get("TOOLKIT_POOLS_URL") or str(home() / "pools")


def runs_dir() -> Path:
    """Client-side run records and copied logs (``toolkit runs ls/logs``)."""
    return home() / "runs"


def environments_dir() -> Path:
    """The environments' local index, locks and virtualenvs (``$TOOLKIT_HOME/environments``)."""
    return home() / "environments"


def default_backend_url() -> str:
    """State backend for run stacks when the pool names none: local files, absolute URL."""
    explicit = os.environ.get("TOOLKIT_BACKEND_URL")
    if explicit:
        return explicit
    return "file://" + str(home() / "state")


def _passphrase() -> str:
    """The passphrase of the secrets provider: env if set, else a per-user random one.

    Generated once and kept 0600 under ``TOOLKIT_HOME`` so local state is
    encrypted without asking the user for anything.
    """
    explicit = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
    if explicit is not None:
        return explicit
    path = home() / "passphrase"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def runner_image(storage: str | None = None) -> str:
    """The runner image jobs start from: ``TOOLKIT_RUNNER_IMAGE`` or ``toolkit-runner:<version>``.

    ``-<scheme>`` names the variant carrying that storage's fsspec driver. The
    override lets a team (or a second checkout on one engine) keep its own build
    beside the default one; ``toolkit toolchain install`` builds whatever it names.
    """
    base = os.environ.get("TOOLKIT_RUNNER_IMAGE") or f"toolkit-runner:{__version__}"
    return base + (f"-{storage}" if storage else "")


def pulumi_binary() -> Path | None:
    """The first Pulumi CLI found: ``TOOLKIT_PULUMI``, then ``pulumi`` on PATH, then the toolkit-built one.

    Whether its version will do is ``toolkit.toolchain.cli_lookup``'s question.
    """
    explicit = os.environ.get("TOOLKIT_PULUMI")
    if explicit:
        return Path(explicit).expanduser()
    found = shutil.which("pulumi")
    if found:
        return Path(found)
    built = bin_dir() / "pulumi"
    return built if built.exists() else None


def pulumi_env(backend_url: str | None = None) -> dict[str, str]:
    """Environment for every Pulumi CLI call: non-interactive, our binaries first.

    Automatic plugin acquisition stays Pulumi's default unless the toolkit is
    offline (``toolkit.toolchain.offline``), where it could only fail slowly.
    """
    from toolkit.toolchain import offline

    path = os.pathsep.join([str(bin_dir()), os.environ.get("PATH", "")])
    env = {
        "PATH": path,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_CONFIG_PASSPHRASE": _passphrase(),
        # Dynamic providers run in this interpreter, so they see the same packages.
        "PULUMI_PYTHON_CMD": sys.executable,
        # Run stacks live for one call; backups of their checkpoints only leave files behind.
        "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
    }
    if offline.is_offline():
        env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    if backend_url:
        env["PULUMI_BACKEND_URL"] = backend_url
    return env
