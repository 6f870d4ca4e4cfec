"""A Prefect flow as the called function: what its job needs to run it *as a flow*.

The job calls the flow object itself, so Prefect's engine runs inside the job
(retries, timeouts, the flow's logging) and the flow's return value or
exception is the call's outcome, as for any function. What the job still
needs comes from the caller's Prefect settings, as one ``env`` layer under
everything the user gives:

* ``PREFECT_API_URL`` (and ``PREFECT_API_KEY`` / ``PREFECT_API_AUTH_STRING``
  as ``toolkit.secret`` values, so they reach only the job): the flow run is
  reported to the caller's Prefect server or Cloud workspace.
* Without an API URL, Prefect's own ephemeral mode: the engine starts a
  temporary local API inside the job; its analytics and UI are switched off
  and its start-up is given time on a busy machine.

Prefect is never imported here: a flow is recognised by its class, and the
settings are read the way Prefect reads them (environment, then the active
profile) only when the caller has Prefect installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from toolkit.secretvalues import Secret

SECRET_SETTINGS = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
EPHEMERAL_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
"""Prefect's ephemeral API inside a job: no outbound analytics, no UI, time to migrate its database."""


def is_prefect_flow(fn: Callable[..., Any]) -> bool:
    """True for a ``prefect.Flow`` (or subclass), without importing Prefect."""
    return any(
        cls.__name__ == "Flow" and cls.__module__ == "prefect.flows" for cls in type(fn).__mro__
    )


def _caller_setting(name: str) -> str | None:
    """A Prefect setting as the caller's Prefect sees it: its environment first, then its profile."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        from prefect.settings import get_current_settings
    except ImportError:
        return None
    settings = get_current_settings()
    field = {"PREFECT_API_URL": "url", "PREFECT_API_KEY": "key", "PREFECT_API_AUTH_STRING": "auth_string"}[name]
    found = getattr(settings.api, field, None)
    if hasattr(found, "get_secret_value"):
        found = found.get_secret_value()
    return str(found) if found else None


def flow_job_env(fn: Callable[..., Any]) -> Mapping[str, Any]:
    """The ``env`` a Prefect flow's job needs (empty for anything else)."""
    if not is_prefect_flow(fn):
        return {}
    api_url = _caller_setting("PREFECT_API_URL")
    if not api_url:
        return dict(EPHEMERAL_ENV)
    env: dict[str, Any] = {"PREFECT_API_URL": api_url}
    for name in SECRET_SETTINGS:
        value = _caller_setting(name)
        if value:
            env[name] = Secret(value)
    return env
