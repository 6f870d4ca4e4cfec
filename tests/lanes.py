"""The fast lane's guard: a test without the ``engine``, ``docker`` or ``k8s`` marker uses none of them.

``scripts/test --fast`` runs only the tests that carry none of the markers
``engine``, ``docker``, ``k8s`` and ``slow``, on a machine that may have no
Pulumi CLI, no Docker engine and no cluster. A test that needs one of them but
is not marked would fail there, or quietly make the fast lane slow. So, for
every test without any of those three markers, in every run:

- at collection, a test that uses a fixture of the Prefect server, its venv or
  the cluster is an error (``FIXTURE_NEEDS``);
- while it is set up and runs, starting the Pulumi CLI, one of its plugins,
  the Docker or Kubernetes programs (``PROGRAMS``), or connecting to the
  Docker engine's socket fails the test with the marker to add.

Teardown is left alone: the session's own fixtures end in the last test's
teardown, whatever that test is. Child processes a test starts are not
watched, except the toolchain tests' ``pulumi`` shims (``tests/toolchain_fakes.py``),
which delegate to the real CLI only through ``real_pulumi``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

INFRA_MARKERS = ("engine", "docker", "k8s")
"""A test with one of these may use the engine, Docker and the cluster (the fast lane leaves it out)."""

PROGRAMS = {
    "pulumi": "engine",
    "docker": "docker",
    "dockerd": "docker",
    "containerd": "docker",
    "kubectl": "k8s",
    "kubelet": "k8s",
    "kube-apiserver": "k8s",
}
"""Program name -> the marker a test that starts it needs."""

PROGRAM_PREFIXES = {"pulumi-resource-": "engine", "pulumi-language-": "engine", "pulumi-analyzer-": "engine"}

FIXTURE_NEEDS = {
    "k8s_cluster": "k8s",
    "prefect_server": "engine",
    "prefect_venv": "engine",
    "installed_docker_plugin": "engine",
}
"""Fixtures that start the cluster or the Prefect server, or need the Prefect venv or a provider plugin built
for the slow lane -> the marker their tests need."""

DOCKER_SOCKETS = ("docker.sock", "containerd.sock")

ACTIVE_ENV = "TOOLKIT_TEST_LANE_GUARD"
"""Set (to the test's id) while a guarded test is set up or runs; ``tests/toolchain_fakes.py`` reads it."""


class UnmarkedInfrastructureUse(RuntimeError):
    """A test without the engine/docker/k8s marker started the engine, Docker or the cluster."""


def program_marker(command: object, search_path: str | None, fakes: Path) -> str | None:
    """The marker a command needs (``None``: any test may run it); ``command`` as given to ``Popen``.

    A program the test made itself (under ``fakes``, pytest's base temporary directory: the toolchain
    tests' shims and stand-ins) or one not found at all (nothing runs) needs none."""
    if isinstance(command, (str, bytes, os.PathLike)):
        text = os.fsdecode(command)
        words = shlex.split(text) if " " in text else [text]
    else:
        words = [os.fsdecode(word) for word in list(command)[:1]]
    if not words:
        return None
    name = Path(words[0]).name
    marker = PROGRAMS.get(name) or next(
        (marker for prefix, marker in PROGRAM_PREFIXES.items() if name.startswith(prefix)), None
    )
    if marker is None:
        return None
    found = words[0] if os.sep in words[0] else shutil.which(words[0], path=search_path)
    if found is None or not Path(found).exists() or Path(found).resolve().is_relative_to(fakes.resolve()):
        return None
    return marker


def _refusal(nodeid: str, what: str, marker: str) -> UnmarkedInfrastructureUse:
    return UnmarkedInfrastructureUse(
        f"{nodeid} {what} but carries none of the markers {', '.join(INFRA_MARKERS)}: "
        f"mark it @pytest.mark.{marker} (the fast lane, scripts/test --fast, runs it on machines without it)"
    )


@contextmanager
def refusing_infrastructure(nodeid: str, fakes: Path) -> Iterator[list[str]]:
    """While active, the Pulumi, Docker and Kubernetes programs and the Docker socket raise instead of running.

    Yields the refusals so far: code under test may catch the error (a ``toolkit doctor`` reporting "missing"),
    and the test fails all the same."""
    refusals: list[str] = []
    original_init = subprocess.Popen.__init__
    original_connect = socket.socket.connect

    def refuse(what: str, marker: str) -> UnmarkedInfrastructureUse:
        error = _refusal(nodeid, what, marker)
        refusals.append(str(error))
        return error

    def guarded_init(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        env = kwargs.get("env")
        search_path = (env if isinstance(env, dict) else os.environ).get("PATH")
        marker = program_marker(kwargs.get("executable") or args, search_path, fakes)
        if marker is not None:
            raise refuse(f"started {args!r}", marker)
        original_init(self, args, *rest, **kwargs)

    def guarded_connect(self: socket.socket, address: object) -> None:
        if self.family == socket.AF_UNIX and isinstance(address, (str, bytes)):
            path = os.fsdecode(address)
            if path.endswith(DOCKER_SOCKETS):
                raise refuse(f"connected to the Docker engine ({path})", "docker")
        original_connect(self, address)

    subprocess.Popen.__init__ = guarded_init  # type: ignore[method-assign]
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    os.environ[ACTIVE_ENV] = nodeid
    try:
        yield refusals
    finally:
        os.environ.pop(ACTIVE_ENV, None)
        subprocess.Popen.__init__ = original_init  # type: ignore[method-assign]
        socket.socket.connect = original_connect  # type: ignore[method-assign]


def needs_no_infrastructure(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(name) for name in INFRA_MARKERS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        if not needs_no_infrastructure(item):
            continue
        used = sorted(set(getattr(item, "fixturenames", ())) & FIXTURE_NEEDS.keys())
        problems += [f"{item.nodeid} uses the fixture {name!r}: mark it @pytest.mark.{FIXTURE_NEEDS[name]}"
                     for name in used]
    if problems:
        raise pytest.UsageError("tests without the engine, docker or k8s marker use their fixtures:\n  "
                                + "\n  ".join(problems))


def _guarded(item: pytest.Item) -> Iterator[None]:
    if not needs_no_infrastructure(item):
        return (yield)
    with refusing_infrastructure(item.nodeid, item.config._tmp_path_factory.getbasetemp()) as refusals:
        result = yield
    if refusals:
        raise UnmarkedInfrastructureUse(refusals[0])
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _guarded(item))
