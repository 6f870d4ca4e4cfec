"""``toolkit env ls`` and ``toolkit env prune``: the environment stacks, listed and destroyed.

The stacks are the truth: listing asks the backend for the ``toolkit-envs``
stacks and their tags; the local index adds when each was last used, which
is what ``--older-than`` judges (an environment never used from this machine
is judged by its creation time). Pruning destroys the stack (so the image or
virtualenv goes with it, and a pushed image is deleted from its registry as
far as the registry allows) and forgets it in the index.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from pydantic import BaseModel

from toolkit import settings
from toolkit.environments import index, stack
from toolkit.environments.base import image_id


class EnvironmentInfo(BaseModel):
    stack: str
    hash: str | None
    kind: str | None
    reference: str | None
    base: str | None
    python: str | None
    packages: list[str]
    size: int | None
    """Bytes of wheels installed (download size)."""
    created: float | None
    last_used: float | None
    present: bool
    """Whether the image (in the local engine) or the virtualenv is there."""

    @property
    def age(self) -> float | None:
        moment = self.last_used or self.created
        return time.time() - moment if moment else None


class Pruned(BaseModel):
    environment: EnvironmentInfo
    destroyed: bool = False
    error: str | None = None
    left_in_registry: str | None = None
    """Set when the registry refused to delete the pushed image: what stays there, why, and the fix."""


def _present(tag: stack.EnvTag) -> bool:
    if tag.kind == "image":
        try:
            return image_id(tag.reference) is not None
        except Exception:  # noqa: BLE001 - an unreachable engine means "not known to be there"
            return False
    from pathlib import Path

    return Path(tag.reference).exists()


def list_environments(backend_url: str | None = None) -> list[EnvironmentInfo]:
    backend = backend_url or settings.default_backend_url()
    found = []
    for name, tag in stack.list_stacks(backend):
        record = index.load(tag.hash) if tag else None
        found.append(
            EnvironmentInfo(
                stack=name,
                hash=tag.hash if tag else None,
                kind=tag.kind if tag else None,
                reference=record.reference if record else (tag.reference if tag else None),
                base=tag.base if tag else None,
                python=tag.python if tag else None,
                packages=tag.packages if tag else [],
                size=tag.size if tag else None,
                created=tag.created if tag else None,
                last_used=record.last_used if record else None,
                present=_present(tag) if tag else False,
            )
        )
    return sorted(found, key=lambda info: info.created or 0)


def prune(
    older_than: float | None = None,
    dry_run: bool = False,
    backend_url: str | None = None,
    stacks: Collection[str] | None = None,
) -> list[Pruned]:
    """Destroy environment stacks unused for ``older_than`` seconds (all of them when None);
    ``stacks``: only those of these names."""
    backend = backend_url or settings.default_backend_url()
    chosen = [
        info for info in list_environments(backend)
        if (older_than is None or (info.age is not None and info.age > older_than))
        and (stacks is None or info.stack in stacks)
    ]
    results = [Pruned(environment=info) for info in chosen]
    if dry_run:
        return results
    for result in results:
        info = result.environment
        lock = index.locked(info.hash) if info.hash else None
        try:
            if lock is not None:
                with lock:  # not while a call is building it
                    result.left_in_registry = stack.destroy(info.stack, backend)
                    index.forget(info.hash or "")
            else:
                result.left_in_registry = stack.destroy(info.stack, backend)
            result.destroyed = True
        except Exception as exc:  # noqa: BLE001 - report per stack, keep pruning the others
            result.error = f"{type(exc).__name__}: {exc}"
    return results
