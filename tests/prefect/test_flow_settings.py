"""What a flow's job gets of the caller's Prefect settings, without Prefect installed here.

A flow is recognised by its class (``prefect.flows.Flow``), so a stand-in
class of that name and module is enough to check the settings layer: the API
URL in plain text, the key and auth string as secrets that no preview shows,
and Prefect's ephemeral mode when the caller has no API.
"""

from __future__ import annotations

import pytest

from toolkit.decorators import InfraFunction
from toolkit.prefect_flows import EPHEMERAL_ENV, flow_job_env, is_prefect_flow
from toolkit.secretvalues import Secret

KEY = "pnu_never-in-a-preview-5b1e"


class Flow:
    """Stands in for ``prefect.flows.Flow`` (matched by class name and module, never imported)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


Flow.__module__ = "prefect.flows"


class TeamFlow(Flow):
    """A subclass in the caller's code is a flow too."""


def _double(x: int) -> int:
    return 2 * x


@pytest.fixture(autouse=True)
def _no_prefect_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(name, raising=False)


def test_flows_are_told_from_plain_functions_by_class() -> None:
    assert is_prefect_flow(Flow(_double)) and is_prefect_flow(TeamFlow(_double))
    assert not is_prefect_flow(_double) and flow_job_env(_double) == {}


def test_without_an_api_the_job_runs_prefect_ephemerally() -> None:
    assert flow_job_env(Flow(_double)) == EPHEMERAL_ENV


def test_the_api_url_travels_plain_and_credentials_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    monkeypatch.setenv("PREFECT_API_KEY", KEY)
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:pass")
    env = flow_job_env(Flow(_double))
    assert env["PREFECT_API_URL"] == "http://prefect.internal:4200/api"
    assert isinstance(env["PREFECT_API_KEY"], Secret) and isinstance(env["PREFECT_API_AUTH_STRING"], Secret)
    assert KEY not in repr(env)


@pytest.mark.engine
def test_a_preview_shows_the_flows_settings_but_never_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    monkeypatch.setenv("PREFECT_API_KEY", KEY)
    plan = InfraFunction(Flow(_double), "process", "local-process").preview(21)
    shown = str(plan) + plan.to_json()
    assert "prefect.internal" in shown
    assert KEY not in shown
