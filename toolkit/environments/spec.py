"""An environment: (base, Python version, the resolved and pinned wheel set), named by its content hash."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

from toolkit.environments.requirements import Requested

IMAGE_REPOSITORY = "toolkit-env"
ENV_LABEL = "toolkit.env"
"""Image label holding the environment hash: the per-call check that the image is the one built."""
EnvironmentKind = Literal["image", "virtualenv"]


class Pin(BaseModel):
    """One wheel of a resolved environment."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    wheel: str
    """File name of the wheel in the wheelhouse."""
    sha256: str
    size: int
    source: str
    """auto, packages, requirements, or 'dependency' for what the resolver added."""
    origin: str = ""


class Environment(BaseModel):
    """What a job's environment is made of; equal content, equal hash, one build."""

    model_config = ConfigDict(frozen=True)

    kind: EnvironmentKind
    base: str
    """The base image or interpreter, as the job would use it without this environment."""
    base_identity: str
    python: str
    purelib: str
    """The base's site-packages, where the environment's ``.pth`` goes."""
    pins: tuple[Pin, ...]
    registry: str | None = None
    """The image repository a remote target pulls from (``<pool image_registry>/toolkit-env``); None: the
    caller's Docker engine runs the image (or the environment is a virtualenv)."""

    @property
    def hash(self) -> str:
        content: dict[str, object] = {
            "kind": self.kind,
            "base": self.base_identity,
            "python": self.python,
            "pins": sorted((pin.name, pin.version, pin.sha256) for pin in self.pins),
        }
        if self.registry:  # one stack per (environment, registry): each holds its own push
            content["registry"] = self.registry
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def stack_name(self) -> str:
        return f"env-{self.hash}"

    @property
    def image_name(self) -> str:
        """The image built (and, with a registry, pushed) under its tag; jobs on a remote target pull it
        by digest instead."""
        return f"{self.registry or IMAGE_REPOSITORY}:{self.hash}"

    @property
    def size(self) -> int:
        return sum(pin.size for pin in self.pins)


def request_key(base_identity: str, items: list[Requested], extra: str = "") -> str:
    """The cache key of a call's request: the same base and the same asks resolve the same way."""
    content = [base_identity, extra, *sorted(f"{item.source}:{item.requirement}" for item in items)]
    return hashlib.sha256("\n".join(content).encode()).hexdigest()[:24]
