"""The run stacks' key service without an engine: Vault's transit calls, the token, another process's salt."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from toolkit.toolchain import stack_key


def _call(service: stack_key.KeyService, operation: str, body: dict, token: str | None = None) -> dict:
    request = urllib.request.Request(
        f"{service.url}/v1/transit/{operation}/{stack_key.KEY_NAME}", data=json.dumps(body).encode(), method="PUT",
        headers={"X-Vault-Token": service.token if token is None else token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@pytest.fixture(scope="module")
def services():
    first, second, other = (stack_key.KeyService(phrase) for phrase in ("phrase", "phrase", "another phrase"))
    yield first, second, other
    for service in (first, second, other):
        service.close()


def test_a_data_key_sealed_by_one_process_opens_in_another_with_the_passphrase(services) -> None:
    first, second, other = services
    data_key = base64.b64encode(b"k" * 32).decode()
    sealed = _call(first, "encrypt", {"plaintext": data_key})["ciphertext"]
    assert b"k" * 8 not in sealed.encode() and sealed.startswith(stack_key.PREFIX)
    assert _call(second, "decrypt", {"ciphertext": sealed})["plaintext"] == data_key  # gc's own service
    with pytest.raises(urllib.error.HTTPError) as wrong:
        _call(other, "decrypt", {"ciphertext": sealed})
    assert wrong.value.code == 400


def test_a_caller_without_the_token_is_refused(services) -> None:
    first, _, _ = services
    with pytest.raises(urllib.error.HTTPError) as refused:
        _call(first, "encrypt", {"plaintext": "eA=="}, token="guess")
    assert refused.value.code == 403


def test_off_when_asked_or_when_the_environment_names_a_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOOLKIT_STACK_KEY", "VAULT_SERVER_URL", "VAULT_ADDR", "VAULT_SERVER_TOKEN", "VAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert stack_key.enabled()
    assert set(stack_key.env("phrase")) == {"VAULT_SERVER_URL", "VAULT_SERVER_TOKEN"}
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example:8200")
    assert not stack_key.enabled() and stack_key.env("phrase") == {}
    monkeypatch.delenv("VAULT_ADDR")
    monkeypatch.setenv("TOOLKIT_STACK_KEY", "0")
    assert not stack_key.enabled()
