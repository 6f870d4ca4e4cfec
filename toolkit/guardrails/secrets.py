"""Which secrets provider encrypts run stacks' state.

The pool's ``secrets_provider`` wins, then ``TOOLKIT_SECRETS_PROVIDER``, then
``passphrase`` (a per-user random passphrase, see ``settings``). Cloud
providers are Pulumi's own (gocloud URLs): the CLI reaches the KMS with the
credentials and endpoints of its environment, so a process that destroys a
stack later (``toolkit gc``, ``toolkit runs cancel``) needs only the same
environment: the provider and its encrypted data key are kept in the stack's
state, not on the client's disk.
"""

from __future__ import annotations

import os

ENV = "TOOLKIT_SECRETS_PROVIDER"
PASSPHRASE = "passphrase"
CLOUD_SCHEMES = ("awskms://", "gcpkms://", "azurekeyvault://", "hashivault://")


def check_provider(value: str) -> str:
    """``value`` if it names a provider Pulumi supports; ``ValueError`` listing the valid forms otherwise."""
    if value == PASSPHRASE or (value.startswith(CLOUD_SCHEMES) and len(value) > len(value.split("://")[0]) + 3):
        return value
    raise ValueError(
        f"secrets provider {value!r} is not one of: {PASSPHRASE!r}, "
        + ", ".join(f"'{scheme}...'" for scheme in CLOUD_SCHEMES)
        + " (e.g. 'awskms://alias/runs?region=eu-west-1')"
    )


def selected_provider(pool_setting: str | None = None) -> str:
    """The provider for a run stack of a pool with ``pool_setting``."""
    value = pool_setting or os.environ.get(ENV) or PASSPHRASE
    try:
        return check_provider(value)
    except ValueError as exc:
        from toolkit.errors import ConfigError

        source = "the pool's secrets_provider" if pool_setting else ENV
        raise ConfigError(f"{source}: {exc}") from None
