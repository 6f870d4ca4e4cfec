"""Where the toolkit keeps things, and the settings read from the environment.

One place decides paths (``TOOLKIT_HOME``, the cache, the state backend), the
runner image's name and the secrets provider of run stacks, so the CLI, the
engine, the toolchain installer and ``doctor`` agree on them. The environment
each Pulumi CLI call gets is ``toolkit.toolchain.pulumi_env``'s.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toolkit._version import __version__
from toolkit.errors import ConfigError

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


def engine_ahead() -> bool:
    """Whether a client starts the next call's engine ahead (``toolkit.ahead``): opt-in with
    ``TOOLKIT_ENGINE_AHEAD=1``, as it keeps a waiting CLI process per pool that a client which
    makes its calls in bursts may not want."""
    return os.environ.get("TOOLKIT_ENGINE_AHEAD") == "1"


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


SECRETS_PROVIDER_ENV = "TOOLKIT_SECRETS_PROVIDER"
PASSPHRASE = "passphrase"
CLOUD_SCHEMES = ("awskms://", "gcpkms://", "azurekeyvault://", "hashivault://")


def check_secrets_provider(value: str) -> str:
    """``value`` if it names a provider Pulumi supports; ``ValueError`` listing the valid forms otherwise."""
    if value == PASSPHRASE or (value.startswith(CLOUD_SCHEMES) and len(value) > len(value.split("://")[0]) + 3):
        return value
    raise ValueError(
        f"secrets provider {value!r} is not one of: {PASSPHRASE!r}, "
        + ", ".join(f"'{scheme}...'" for scheme in CLOUD_SCHEMES)
        + " (e.g. 'awskms://alias/runs?region=eu-west-1')"
    )


def secrets_provider(pool_setting: str | None = None) -> str:
    """Which secrets provider encrypts a run stack's state: the pool's ``pool_setting``, then
    ``TOOLKIT_SECRETS_PROVIDER``, then ``passphrase`` (a per-user random passphrase).

    Cloud providers are Pulumi's own (gocloud URLs): the CLI reaches the KMS with the
    credentials and endpoints of its environment, so a process that destroys a stack
    later (``toolkit gc``, ``toolkit runs cancel``) needs only the same environment.
    """
    value = pool_setting or os.environ.get(SECRETS_PROVIDER_ENV) or PASSPHRASE
    try:
        return check_secrets_provider(value)
    except ValueError as exc:
        source = "the pool's secrets_provider" if pool_setting else SECRETS_PROVIDER_ENV
        raise ConfigError(f"{source}: {exc}") from None
