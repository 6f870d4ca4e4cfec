"""A call's environment, from asks to a reference the target runs: ``plan`` then ``ensure``.

``plan`` (every call, and previews): describe the base, refuse a Python it
cannot load, gather the asks (auto, packages, requirements), and look the
request up in the local index. Only on a miss does it compute the pinned
closure, drop what the base already has and resolve the rest with pip (the
bad-input errors come from here, before any stack exists). ``ensure``
(submissions only) builds an environment the plan found missing, once, under
a lock per environment hash. A cached environment costs a walk of the
pickled call, one Docker API request for the base's ID, two small file
reads and one for the environment image: no pip, no Pulumi.

Targets whose jobs do not run on the caller's Docker engine (``remote``) get
the image pushed to the pool's ``image_registry`` and run it by digest. Their
base image need not be on this machine when the call adds nothing to it; when
it does, the base is pulled to build FROM it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from toolkit import settings
from toolkit.environments import detect, imports, index, requirements, resolve, stack
from toolkit.environments.base import (
    Base,
    check_python,
    describe_image,
    describe_interpreter,
    image_id,
    image_labels,
    pull_image,
)
from toolkit.environments.events import Reporter
from toolkit.environments.requirements import Requested
from toolkit.environments.spec import ENV_LABEL, Environment, request_key
from toolkit.environments.summary import EnvironmentSummary, PackageLine, Status
from toolkit.environments.variables import EnvironmentSettings
from toolkit.errors import ConfigError, RequirementConflictError, TargetUnavailableError
from toolkit.infra.image_registry import ImageRegistry


@dataclass
class EnvironmentPlan:
    """The environment of one call: the base, the asks, and what (if anything) must exist for it."""

    kind: Literal["image", "interpreter"]
    base: Base | None
    """None: a remote target's base image, not on this machine and not needed (nothing to add)."""
    status: Status
    requested: list[Requested] = field(default_factory=list)
    environment: Environment | None = None
    record: index.EnvironmentRecord | None = None
    key: str = ""
    registry: ImageRegistry | None = None
    """Where the environment image is pushed (remote targets)."""

    @property
    def reference(self) -> str | None:
        """What the job runs instead of its base: the built environment, or the one a preview
        would build (None: the base as is)."""
        if self.record is not None:
            return self.record.reference
        return stack.planned_reference(self.environment) if self.environment else None

    @property
    def image(self) -> str | None:
        return self.reference if self.kind == "image" else None

    @property
    def python(self) -> str | None:
        return self.reference if self.kind == "interpreter" else None

    def summary(self) -> EnvironmentSummary:
        packages: list[PackageLine] = []
        installed = {pin.name for pin in self.environment.pins} if self.environment else set()
        for pin in self.environment.pins if self.environment else ():
            packages.append(PackageLine(name=pin.name, version=pin.version, source=pin.source, origin=pin.origin,
                                        size=pin.size))
        for item in self.requested:
            version = self.base.has(item.name) if self.base else None
            if item.name not in installed and version:
                packages.append(PackageLine(name=item.name, version=version, source=item.source, origin=item.origin,
                                            state="in base"))
        return EnvironmentSummary(
            status=self.status,
            base=self.base.describe() if self.base else "the pool's image as is (not on this machine, not inspected)",
            reference=self.reference or (self.base.reference if self.base else "the pool's image"),
            registry=self.registry.repository if self.registry and self.environment else None,
            hash=self.environment.hash if self.environment else None,
            stack=self.environment.stack_name if self.environment else None,
            packages=sorted(packages, key=lambda line: (line.state, line.name)),
        )


def _exists(record: index.EnvironmentRecord) -> bool:
    """Whether the built image or virtualenv is still there (one Engine API request, or a stat).

    A pushed image is judged by its local build: the environment stack holds both and removes
    both; one deleted from the registry behind the stack's back is reported by the job's pull.
    """
    if record.environment.kind == "image":
        labels = image_labels(record.environment.image_name)
        return labels is not None and labels.get(ENV_LABEL) == record.hash
    return Path(record.reference).exists()


def _describe_base(
    kind: str, reference: str | None, pool_name: str, remote: bool, needed: bool, reporter: Reporter | None
) -> Base | None:
    """The base, probed; a remote target's base image is pulled when missing and ``needed``, else None.

    A remote target's job pulls its image itself: with nothing to build on it, a caller without a Docker
    engine (a laptop with only a cloud account) gets None, as for a base its engine does not have."""
    if kind != "image":
        return describe_interpreter(reference)
    assert reference, "an image target names its base image"
    if remote and _local_image_id(reference, needed) is None:
        if not needed:
            return None
        pull_image(reference, pool_name, reporter or Reporter())
    return describe_image(reference, pool_name)


def _local_image_id(reference: str, needed: bool) -> str | None:
    """``image_id``; an unreachable engine is an error only when an environment must be built on the image."""
    try:
        return image_id(reference)
    except TargetUnavailableError:
        if needed:
            raise
        return None


def _explicit(env: EnvironmentSettings, cwd: Path) -> list[Requested]:
    items = requirements.from_packages(env.packages)
    if env.requirements:
        items += requirements.from_file(env.requirements, cwd)
    requirements.check_pins(items)
    return items


def _versions(roots: dict[str, set[str]]) -> dict[str, str]:
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in roots}


@dataclass(frozen=True)
class _Destination:
    """Where a built image goes: the caller's engine, or (remote) the pool's registry."""

    remote: bool
    registry: ImageRegistry | None
    pool_name: str

    @property
    def key(self) -> str:
        """Part of the request key: the same asks built for another destination are another environment."""
        if not self.remote:
            return ""
        return f"registry:{self.registry.repository}" if self.registry else "registry:none"

    def repository(self, missing: list[Requested]) -> str | None:
        """The registry repository for a remote target; refuses a remote pool without a registry."""
        if not self.remote:
            return None
        if self.registry is None:
            raise ConfigError(
                f"pool {self.pool_name!r} runs its jobs off this machine, so the packages this call needs "
                f"({', '.join(item.requirement for item in missing[:6])}) must reach them in an image pushed to a "
                "registry they can pull from, and the pool names none. Set the pool's image_registry (e.g. "
                f"`toolkit pool create {self.pool_name} --type ... --image-registry HOST/PATH`), or install the "
                "packages into the pool's image"
            )
        return self.registry.repository


def plan(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    env: EnvironmentSettings,
    kind: Literal["image", "interpreter"],
    base_reference: str | None,
    pool_name: str,
    cwd: Path,
    reporter: Reporter | None = None,
    remote: bool = False,
    registry: ImageRegistry | None = None,
    function: str | None = None,
) -> EnvironmentPlan:
    """What the call's environment is and whether it exists; raises on bad input, builds nothing.

    ``remote``: the job pulls its image from ``registry`` (the pool's ``image_registry``) instead of
    running it on this machine's Docker engine. ``function`` names the call in errors.
    """
    walked = detect.walk_call(fn, args, kwargs)
    prepared = _plan(walked.referenced, env, kind, base_reference, pool_name, cwd, reporter, remote, registry)
    missing_here = detect.not_importable_here(walked.imported)
    if missing_here and prepared.base is not None:  # None: a remote base not on this machine; the job will tell
        imports.check_available(function or repr(fn), missing_here, prepared.base, prepared.environment,
                                resolve.wheelhouse())
    return prepared


def _plan(
    referenced: set[str],
    env: EnvironmentSettings,
    kind: Literal["image", "interpreter"],
    base_reference: str | None,
    pool_name: str,
    cwd: Path,
    reporter: Reporter | None,
    remote: bool,
    registry: ImageRegistry | None,
) -> EnvironmentPlan:
    explicit = _explicit(env, cwd)
    used = detect.distributions_of(referenced) if env.auto_packages else {}
    base = _describe_base(kind, base_reference, pool_name, remote, bool(explicit or used), reporter)
    if base is None:
        return EnvironmentPlan(kind, None, "base")
    check_python(base)
    roots = {name: modules for name, modules in used.items() if not base.has(name)}
    if not roots and not explicit:
        return EnvironmentPlan(kind, base, "base")
    fingerprint = json.dumps([sorted(_versions(roots).items()), detect.site_fingerprint() if roots else ""])
    destination = _Destination(remote, registry, pool_name)
    key = request_key(base.identity, explicit, fingerprint + destination.key)
    known = index.lookup(key)
    if known is not None and known.environment is None:
        return EnvironmentPlan(kind, base, "base", known.requested, key=key)
    if known is not None and known.environment is not None:
        record = index.load(known.environment.hash)
        if record is not None and _exists(record):
            index.touch(record)
            return EnvironmentPlan(kind, base, "cached", known.requested, known.environment, record, key, registry)
        if all((resolve.wheelhouse() / pin.wheel).exists() for pin in known.environment.pins):
            return EnvironmentPlan(kind, base, "build", known.requested, known.environment, None, key, registry)
    return _resolve(kind, base, explicit, roots, key, reporter or Reporter(), destination)


def _resolve(
    kind: Literal["image", "interpreter"],
    base: Base,
    explicit: list[Requested],
    roots: dict[str, set[str]],
    key: str,
    reporter: Reporter,
    destination: _Destination,
) -> EnvironmentPlan:
    auto = requirements.installed_closure(roots, base.marker_environment) if roots else []
    if kind == "image":  # the image's own packages load first: a different version cannot be layered in
        for item in explicit:
            version = base.has(item.name)
            if version and not requirements.satisfied_by(item, version, base.marker_environment):
                raise RequirementConflictError(
                    f"{item.requirement!r} ({item.source}: {item.origin}) conflicts with {item.name} {version} in "
                    f"the base image {base.reference!r}. Use {item.name}=={version}, or build a base image "
                    f"FROM {base.reference!r} with the version you need and set image= to it"
                )
    wanted = requirements.combine([item for item in auto if not base.has(item.name)], explicit)
    missing = [item for item in wanted if not requirements.satisfied_by(item, base.has(item.name), base.marker_environment)]
    if not missing:
        index.remember(key, index.Resolution(environment=None, requested=wanted))
        return EnvironmentPlan(kind, base, "base", wanted, key=key)
    if kind == "interpreter" and not base.is_caller:
        raise ConfigError(
            f"the process job runs {base.reference!r}, which lacks {', '.join(i.requirement for i in missing)}; "
            "environments for another interpreter are not built. Install them into it, or drop the 'python' "
            "job variable so the job runs (a virtualenv over) the caller's interpreter"
        )
    repository = destination.repository(missing)
    base.check_installable()
    reporter("resolving", f"{len(missing)} requirement(s) for {base.describe()}: "
             + ", ".join(item.requirement for item in missing[:6]) + (" ..." if len(missing) > 6 else ""))
    pins = resolve.resolve(
        missing, base, lambda line: reporter("resolving" if line.startswith("Collecting") else "downloading", line)
    )
    environment = Environment(
        kind="image" if kind == "image" else "virtualenv",
        base=base.reference,
        base_identity=base.identity,
        python=base.python,
        purelib=base.purelib,
        pins=tuple(pins),
        registry=repository,
    )
    reporter("downloading", f"{len(pins)} wheel(s) ready for environment {environment.hash}", environment.size)
    index.remember(key, index.Resolution(environment=environment, requested=wanted))
    record = index.load(environment.hash)
    registry = destination.registry if repository else None
    if record is not None and _exists(record):
        index.touch(record)
        return EnvironmentPlan(kind, base, "cached", wanted, environment, record, key, registry)
    return EnvironmentPlan(kind, base, "build", wanted, environment, None, key, registry)


def ensure(prepared: EnvironmentPlan, backend_url: str | None = None, reporter: Reporter | None = None) -> EnvironmentPlan:
    """Build the planned environment unless it exists; once across threads and processes."""
    if prepared.status != "build":
        return prepared
    environment, base = prepared.environment, prepared.base
    assert environment is not None and base is not None
    reporter = reporter or Reporter(environment.stack_name)
    backend = backend_url or settings.default_backend_url()
    with index.locked(environment.hash):
        record = index.load(environment.hash)
        if record is not None and _exists(record):
            reporter("cached", f"{record.reference} (built meanwhile by another call)")
            return EnvironmentPlan(prepared.kind, base, "cached", prepared.requested, environment, record,
                                   prepared.key, prepared.registry)
        where = f", pushed to {prepared.registry.repository}" if prepared.registry else ""
        reporter("building", f"{environment.stack_name}: {len(environment.pins)} wheel(s) FROM {base.reference}{where}",
                 environment.size)
        now = time.time()
        tag = stack.EnvTag(
            hash=environment.hash,
            kind=environment.kind,
            reference=stack.planned_reference(environment),
            base=base.reference,
            python=environment.python,
            packages=[f"{pin.name}=={pin.version} ({pin.source})" for pin in environment.pins],
            size=environment.size,
            created=now,
        )
        reference = stack.build(environment, tag, backend, reporter, prepared.registry)
        record = index.EnvironmentRecord(environment=environment, reference=reference, backend_url=backend,
                                         created=now, last_used=now)
        index.save(record)
    return EnvironmentPlan(prepared.kind, base, "cached", prepared.requested, environment, record,
                           prepared.key, prepared.registry)
