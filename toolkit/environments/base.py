"""The base an environment builds on: a runner image, or the caller's interpreter.

What a resolution needs to know about it (Python version, the wheel platform
tags its interpreter accepts, its marker environment, the distributions and
modules it already has) is asked of the base itself, by running a small script
with its own ``python3``: a container for an image, the interpreter for a
process target. Answers are cached per image ID (or interpreter path and
mtime, asked again when its site-packages change), so a call pays one Docker
API request to learn the image's ID. The caller's own interpreter runs the
same script in-process, again whenever its site-packages change: a package
installed mid-session is part of the next call's base.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from packaging.utils import canonicalize_name
from pydantic import BaseModel

from toolkit import settings
from toolkit.environments import detect
from toolkit.environments.events import Reporter
from toolkit.errors import ConfigError, RuntimeMismatchError, TargetUnavailableError

BaseKind = Literal["image", "interpreter"]

DESCRIBE = r"""
def describe():
    import importlib.metadata as m, os, pkgutil, platform, sys, sysconfig
    try:
        from packaging import markers, tags
    except ImportError:
        try:
            from pip._vendor.packaging import markers, tags
        except ImportError:
            markers = tags = None
    supported = list(tags.sys_tags()) if tags else []
    site_dirs = {}
    for entry in sys.path:
        if entry.rstrip("/").endswith(("site-packages", "dist-packages")) and os.path.isdir(entry):
            site_dirs[entry] = os.stat(entry).st_mtime_ns
    return {
        "python": "%d.%d" % sys.version_info[:2],
        "python_full": platform.python_version(),
        "implementation": tags.interpreter_name() if tags else sys.implementation.name[:2],
        "platforms": list(dict.fromkeys(t.platform for t in supported)),
        "abis": list(dict.fromkeys(t.abi for t in supported)),
        "marker_environment": markers.default_environment() if markers else {},
        "purelib": sysconfig.get_paths()["purelib"],
        "distributions": {d.metadata["Name"]: d.version for d in m.distributions() if d.metadata["Name"]},
        "modules": sorted({module.name for module in pkgutil.iter_modules()} | set(sys.builtin_module_names)),
        "site_dirs": site_dirs,
    }
"""
"""Defines ``describe()``, run inside the base with its own interpreter. Only the standard library is
required; the wheel tags come from ``packaging`` or pip's copy of it (a base without either can run
jobs but not have packages added: ``Base.check_installable`` says so)."""
PROBE = DESCRIBE + "\nimport json\nprint(json.dumps(describe()))\n"
"""The script a base image or another interpreter runs: its description as one JSON document."""
_PROBE_VERSION = hashlib.sha256(PROBE.encode()).hexdigest()[:8]
"""Part of the cache file's name: a changed probe asks every base again."""


class Base(BaseModel):
    """An image or interpreter as a resolution target."""

    kind: BaseKind
    reference: str
    """The image name, or the interpreter path, as the job uses it."""
    identity: str
    """What the environment's hash depends on: the image ID, or interpreter path + version."""
    python: str
    """``major.minor``: a bundle pickled by another minor version may not load."""
    python_full: str
    implementation: str
    platforms: list[str]
    """Wheel platform tags the interpreter accepts, most specific first."""
    abis: list[str]
    marker_environment: dict[str, str]
    purelib: str
    distributions: dict[str, str]
    """Canonical name -> version of what the base already has installed."""
    modules: list[str]
    """Top-level modules its interpreter can import (standard library included)."""
    site_dirs: dict[str, int]
    """Its site-packages directories and their mtimes: they change when a package is installed."""

    @property
    def is_caller(self) -> bool:
        return self.kind == "interpreter" and self.reference == sys.executable

    def has(self, name: str) -> str | None:
        """The installed version of distribution ``name`` in the base, if any."""
        return self.distributions.get(canonicalize_name(name))

    def check_installable(self) -> None:
        """Packages are added with the base's own pip, for the tags it reports."""
        if not self.platforms:
            raise ConfigError(
                f"the {self.kind} {self.reference!r} has no pip (nor packaging), so packages cannot be added to it. "
                f"Build it FROM the toolkit runner image ({settings.runner_image()!r}) or install pip into it"
            )

    def describe(self) -> str:
        platform = next((p for p in self.platforms if p != "any"), "any")
        return f"{self.reference} (Python {self.python_full}, {platform})"


def caller_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def check_python(base: Base) -> None:
    """The caller pickles the call with its Python; the base must be able to load it."""
    caller = caller_python()
    if base.python != caller:
        raise RuntimeMismatchError(
            f"the job's {base.kind} {base.reference!r} runs Python {base.python_full}, but this caller runs "
            f"Python {caller}: a bundle pickled by Python {caller} may not load there. Use an image (or "
            f"interpreter) with Python {caller}, e.g. build it FROM the toolkit runner image, or call from "
            f"Python {base.python}"
        )


def _from_probe(kind: BaseKind, reference: str, identity: str, answer: dict[str, Any]) -> Base:
    answer["distributions"] = {canonicalize_name(k): v for k, v in answer["distributions"].items()}
    return Base(kind=kind, reference=reference, identity=identity, **answer)


def _probe_cache(identity: str) -> Path:
    safe = identity.replace(":", "-").replace("/", "_")
    return settings.cache_dir() / "environments" / "bases" / f"{safe}-{_PROBE_VERSION}.json"


def _cached_probe(identity: str) -> dict[str, Any] | None:
    try:
        return json.loads(_probe_cache(identity).read_text())
    except (OSError, ValueError):
        return None


def _store_probe(identity: str, answer: dict[str, Any]) -> None:
    path = _probe_cache(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
    temporary.write_text(json.dumps(answer))
    os.replace(temporary, path)


_clients = threading.local()


def docker_client() -> Any:
    """One Engine API client per thread (creating one costs milliseconds; a requests session is
    not meant to be shared between threads)."""
    client = getattr(_clients, "client", None)
    if client is None:
        import docker

        client = _clients.client = docker.from_env()
    return client


def image_id(image: str) -> str | None:
    """The ID of a local image, or None when the engine does not have it."""
    import docker.errors

    try:
        return docker_client().api.inspect_image(image)["Id"]
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise TargetUnavailableError(
            f"the Docker engine is not reachable ({exc}). Start it or set DOCKER_HOST; `toolkit doctor` shows "
            "what is missing"
        ) from None


def image_labels(image: str) -> dict[str, str] | None:
    """Labels of a local image (None when the engine does not have it)."""
    import docker.errors

    try:
        return docker_client().api.inspect_image(image)["Config"].get("Labels") or {}
    except docker.errors.ImageNotFound:
        return None


def pull_image(image: str, pool_name: str, reporter: Reporter) -> None:
    """Pull a remote target's base image so an environment can be built FROM it (the caller's Docker
    login or credential helper applies)."""
    import docker.errors

    reporter("resolving", f"pulling base image {image} (the environment is built FROM it)")
    try:
        docker_client().api.pull(image)  # docker-py splits the tag or digest off (default 'latest')
    except docker.errors.DockerException as exc:
        raise ConfigError(
            f"the image {image!r} of pool {pool_name!r} is not on this machine and could not be pulled "
            f"({str(exc).strip()[-300:]}); the call's packages are built FROM it. `docker login` to its "
            f"registry, or `docker pull {image}` yourself"
        ) from None


def describe_image(image: str, pool_name: str) -> Base:
    """The base image ``image``, probed once per image ID."""
    identity = image_id(image)
    if identity is None:
        raise ConfigError(f"image {image!r} of pool {pool_name!r} is not in the local Docker engine; build it first")
    answer = _cached_probe(identity)
    if answer is None:
        answer = _probe_image(image, pool_name)
        _store_probe(identity, answer)
    return _from_probe("image", image, identity, dict(answer))


def _probe_image(image: str, pool_name: str) -> dict[str, Any]:
    import docker.errors

    try:
        output = docker_client().containers.run(
            image,
            ["-c", PROBE],
            entrypoint=["python3"],
            remove=True,
            network_disabled=True,
            labels={"toolkit-probe": "1"},
        )
        return json.loads(output)
    except (docker.errors.ContainerError, docker.errors.APIError, ValueError) as exc:
        raise ConfigError(
            f"could not ask image {image!r} of pool {pool_name!r} for its Python and platform "
            f"({type(exc).__name__}: {str(exc).strip()[-300:]}). Its python3 must run; build it "
            f"FROM the toolkit runner image ({settings.runner_image()!r})"
        ) from None


def describe_interpreter(python: str | None) -> Base:
    """The interpreter a process job runs: the caller's own (asked in-process) or another one."""
    path = python or sys.executable
    if path == sys.executable:
        return _caller_base(detect.installed_state())
    try:
        stat = os.stat(path)
    except OSError:
        raise ConfigError(f"interpreter {path!r} does not exist; fix the 'python' job variable") from None
    identity = f"{os.path.realpath(path)}@{stat.st_mtime_ns}"
    answer = _cached_probe(identity)
    if answer is None or not _same_site_dirs(answer["site_dirs"]):
        result = subprocess.run([path, "-c", PROBE], capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"interpreter {path!r} could not describe itself: {result.stderr.strip()[-300:]}")
        answer = json.loads(result.stdout)
        _store_probe(identity, answer)
    return _from_probe("interpreter", path, identity, dict(answer))


def _same_site_dirs(recorded: dict[str, int]) -> bool:
    """Whether an interpreter's site-packages are as probed (a package installed since changes them)."""
    try:
        return all(os.stat(path).st_mtime_ns == mtime for path, mtime in recorded.items())
    except OSError:
        return False


@functools.lru_cache(maxsize=4)
def _caller_base(installed_state: str) -> Base:
    """This interpreter, described in-process, once per state of its site-packages (``installed_state``)."""
    namespace: dict[str, Any] = {}
    exec(DESCRIBE, namespace)  # noqa: S102 - our own constant script, the one a base image runs
    identity = f"{os.path.realpath(sys.executable)}@{sys.version}"
    return _from_probe("interpreter", sys.executable, identity, namespace["describe"]())
