"""Selecting run stacks' secrets provider: pool setting, then TOOLKIT_SECRETS_PROVIDER, then passphrase.

The awskms:// provider runs for real in test_guardrails_kms.py; the others are
Pulumi's own gocloud keepers whose services cannot exist here, so these tests
check that the choice reaches the stack's creation (``stack init --secrets-provider``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import process
from toolkit.errors import ConfigError
from toolkit.pools.registry import PoolRegistry, WorkPool, parse_pool
from toolkit.preparation import prepare
from toolkit.workspace import workspace_options


def _fn() -> int:
    return 1


@pytest.mark.engine  # workspace_options asks the Pulumi CLI for its version
@pytest.mark.parametrize("provider", [
    "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
    "azurekeyvault://vault.vault.azure.net/keys/runs",
    "hashivault://runs",
    "awskms://alias/runs?region=eu-west-1",
])
def test_a_pools_provider_reaches_the_stack_creation(provider, monkeypatch):
    monkeypatch.setenv("TOOLKIT_SECRETS_PROVIDER", "hashivault://ignored-the-pool-wins")
    PoolRegistry().save(WorkPool(name="kms-pool", type="process", secrets_provider=provider), overwrite=True)
    prepared = prepare(_fn, (), {}, "kms-pool", [])
    prepared.discard_bundle()
    assert prepared.secrets_provider == provider
    assert workspace_options("file:///tmp/x", Path("/tmp"), secrets_provider=prepared.secrets_provider).secrets_provider == provider
    PoolRegistry().delete("kms-pool")


@pytest.mark.engine  # workspace_options asks the Pulumi CLI for its version
def test_environment_then_passphrase(monkeypatch):
    monkeypatch.delenv("TOOLKIT_SECRETS_PROVIDER", raising=False)
    prepared = prepare(_fn, (), {}, "local-process", [])
    prepared.discard_bundle()
    assert prepared.secrets_provider == "passphrase"
    monkeypatch.setenv("TOOLKIT_SECRETS_PROVIDER", "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k")
    assert workspace_options("file:///tmp/x", Path("/tmp")).secrets_provider.startswith("gcpkms://")
    monkeypatch.setenv("TOOLKIT_SECRETS_PROVIDER", "vault://nope")

    @process
    def f() -> int:
        return 1

    with pytest.raises(ConfigError, match=r"TOOLKIT_SECRETS_PROVIDER: secrets provider 'vault://nope' is not one of"):
        f.preview()


def test_an_unknown_provider_in_a_pool_document_names_the_valid_forms():
    with pytest.raises(ConfigError, match=r"secrets_provider: .*'kms://x' is not one of: 'passphrase', 'awskms://\.\.\.'"):
        parse_pool('{"name": "p", "type": "process", "secrets_provider": "kms://x"}', source="p.json")
