"""Build progress: resolving, downloading (with sizes), building, as lines or as JSON events.

Lines go through ``toolkit.progress.Progress`` like a run's; with
``TOOLKIT_PROGRESS=json`` (the CLI's ``--json``) each step is one JSON object
on stderr: ``{"event": "environment", "stage": ..., "message": ..., "bytes": ...}``.
"""

from __future__ import annotations

from typing import Literal

from pulumi.automation import EngineEvent
from pydantic import BaseModel

from toolkit.environments.summary import human_size
from toolkit.progress import Progress, emit_json, json_mode

Stage = Literal["resolving", "downloading", "building", "built", "cached"]


class BuildEvent(BaseModel):
    event: Literal["environment"] = "environment"
    environment: str
    stage: Stage
    message: str
    bytes: int | None = None


class Reporter:
    """Reports one environment's resolution and build."""

    def __init__(self, label: str = "env") -> None:
        self.label = label
        self._progress = Progress(label)

    def __call__(self, stage: Stage, message: str, size: int | None = None) -> None:
        if json_mode():
            if self._progress.show:
                emit_json(BuildEvent(environment=self.label, stage=stage, message=message, bytes=size).model_dump())
            return
        suffix = f" ({human_size(size)})" if size is not None else ""
        self._progress.say(f"{stage}: {message}{suffix}")

    def on_event(self, event: EngineEvent) -> None:
        """The environment stack's engine events (the image build), rendered like a run's."""
        self._progress.on_event(event)

    @property
    def errors(self) -> list[str]:
        return self._progress.errors
