"""Online or offline: whether Pulumi may download plugins, decided once for every Pulumi call.

Online (the normal case on a user's machine) the toolkit lets Pulumi acquire
plugins the way every Pulumi user gets them: ``pulumi plugin install`` or
automatic acquisition during ``up``. Offline it disables automatic acquisition
and builds what is missing from the Go module proxy instead.

``TOOLKIT_OFFLINE=1`` forces offline mode and ``TOOLKIT_OFFLINE=0`` online
mode. Unset, the mode is detected: a failed plugin acquisition is remembered
in the cache for ``REMEMBER_SECONDS``, so the toolkit does not wait for an
unreachable download site on every call, and tries again after that.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel

from toolkit import settings

ENV = "TOOLKIT_OFFLINE"
REMEMBER_SECONDS = 3600.0
"""How long a failed acquisition keeps the toolkit offline before it tries to download again."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Mode(BaseModel):
    """The mode and why: what ``toolkit doctor`` prints."""

    offline: bool
    reason: str


def _marker() -> Path:
    return settings.cache_dir() / "offline.json"


def mode(now: float | None = None) -> Mode:
    """The mode for this call: the ``TOOLKIT_OFFLINE`` setting, else a recent failed acquisition, else online."""
    explicit = os.environ.get(ENV, "").strip().lower()
    if explicit in _TRUE:
        return Mode(offline=True, reason=f"{ENV}={os.environ[ENV]}")
    if explicit in _FALSE:
        return Mode(offline=False, reason=f"{ENV}={os.environ[ENV]}")
    try:
        failure = json.loads(_marker().read_text())
        since, detail = float(failure["since"]), str(failure["detail"])
    except (OSError, ValueError, KeyError, TypeError):
        return Mode(offline=False, reason="plugins are downloaded by Pulumi when missing")
    now = time.time() if now is None else now
    if now - since >= REMEMBER_SECONDS:
        return Mode(offline=False, reason=f"the last failed download is over {REMEMBER_SECONDS / 3600:g} h old; trying again")
    retry = time.strftime("%H:%M", time.localtime(since + REMEMBER_SECONDS))
    return Mode(
        offline=True,
        reason=f"detected: {detail} (remembered until {retry}; {ENV}=0 forces online mode)",
    )


def is_offline() -> bool:
    return mode().offline


def remember_failure(detail: str) -> None:
    """Record that an acquisition failed: offline mode until ``REMEMBER_SECONDS`` have passed."""
    marker = _marker()
    marker.parent.mkdir(parents=True, exist_ok=True)
    temporary = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"since": time.time(), "detail": detail}))
    os.replace(temporary, marker)


def forget_failure() -> None:
    """An acquisition worked: the download site is reachable again."""
    _marker().unlink(missing_ok=True)
