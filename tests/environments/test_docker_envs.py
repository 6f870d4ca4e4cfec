"""Environments on the real Docker engine: images built through Pulumi, once, and used by jobs.

The package sets are tiny pure-Python wheels (humanize, six) so builds take
seconds; the humanize environment is built by whichever test needs it first
and reused by the others (one TOOLKIT_HOME per session), which is itself what
the reuse assertions check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import humanize
import pytest

from tests.environments.conftest import env_stacks, fake_sdist, updates
from tests.leaks import assert_nothing_left
from toolkit import diy_backend, docker, settings
from toolkit.environments import index
from toolkit.errors import BundleVerificationError
from toolkit.futures import RunFuture, wait_for_teardowns
from toolkit.preparation import prepare

pytestmark = [pytest.mark.engine, pytest.mark.docker]


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def image_exists(name: str) -> bool:
    """Whether the engine has image ``name``; ``docker`` failing for any other reason raises (a broken engine must
    not read as "image gone")."""
    inspected = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True,
                               text=True, timeout=60)
    if inspected.returncode == 0:
        return True
    if "no such image" in inspected.stderr.lower():
        return False
    raise AssertionError(f"`docker image inspect {name}` failed (exit {inspected.returncode}): {inspected.stderr.strip()}")


@docker
def formatted(n: int) -> tuple[str, str]:
    """Uses ``humanize`` through this module's global import: auto-detected, pinned to the caller's version."""
    return humanize.__version__, humanize.intcomma(n)


def test_an_auto_detected_package_is_built_once_and_reused():
    plan = formatted.preview(1234)
    environment = plan.environment
    assert environment is not None and environment.status in ("build", "cached")
    assert [(p.name, p.version, p.source, p.origin) for p in environment.packages if p.state == "install"] == [
        ("humanize", "4.12.3", "auto", "import humanize")
    ]
    assert environment.reference == f"toolkit-env:{environment.hash}"
    assert formatted(1234) == ("4.12.3", "1,234")
    assert image_exists(environment.reference) and environment.stack in env_stacks()
    assert updates(environment.stack) == 1

    assert formatted.preview(5).environment.status == "cached"
    assert formatted(5678) == ("4.12.3", "5,678")
    assert updates(environment.stack) == 1  # the second call built nothing


def test_explicit_packages_and_a_requirements_file(project):
    (project / "requirements.txt").write_text("six==1.16.0\n")

    @docker(packages=["humanize==4.11.0"], requirements="requirements.txt", auto_packages=False)
    def versions() -> tuple[str, str]:
        import humanize
        import six

        return humanize.__version__, six.__version__

    plan = versions.preview()
    assert {(p.name, p.version, p.source) for p in plan.environment.packages} == {
        ("humanize", "4.11.0", "packages"),
        ("six", "1.16.0", "requirements"),
    }
    assert "humanize==4.11.0  [packages - packages[0]" in str(plan)
    assert versions() == ("4.11.0", "1.16.0")


def test_a_local_package_travels_by_value_and_its_imports_are_detected(project, monkeypatch):
    monkeypatch.syspath_prepend(str(project))
    from teamlib import report

    try:
        assert docker(report.total)([3, 5]) == "8,000"
    finally:
        for name in [m for m in sys.modules if m.startswith("teamlib")]:
            del sys.modules[name]


def test_include_files_are_read_by_the_function(project):
    @docker(include_files=["data"])
    def read_scores() -> dict:
        import os

        with open("data/scores.csv") as handle:
            rows = handle.read().splitlines()
        with open("data/out.txt", "w") as handle:  # the working directory is writable
            handle.write("ok")
        return {"rows": rows, "cwd": os.getcwd()}

    value = read_scores()
    assert value["rows"] == ["name,score", "ada,3", "bob,5"]
    assert not (project / "data" / "out.txt").exists()


def test_two_concurrent_first_calls_build_once():
    @docker(packages=["six==1.15.0"], auto_packages=False)
    def six_version() -> str:
        import six

        return six.__version__

    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(six_version())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and results == ["1.15.0", "1.15.0"]
    assert updates(six_version.preview().environment.stack) == 1


@pytest.mark.slow
def test_a_pure_python_source_distribution_is_built_into_a_wheel_here(wheelhouse):
    fake_sdist(wheelhouse, "toolkit-test-pure-demo", "1.0")

    @docker(packages=["toolkit-test-pure-demo==1.0"], auto_packages=False)
    def from_source() -> str:
        import toolkit_test_pure_demo

        return toolkit_test_pure_demo.VALUE

    assert from_source() == "built from source"


def test_a_tampered_file_archive_is_refused(project):
    prepared = prepare(lambda: open("data/scores.csv").read(), (), {}, "local-docker", [{"include_files": ["data"]}])
    assert prepared.context.files_path is not None
    prepared.context.files_path.write_bytes(prepared.context.files_path.read_bytes() + b"extra")
    with pytest.raises(BundleVerificationError, match="does not match the digest in the bundle's signed header"):
        RunFuture(prepared).result(timeout=300)


def _resources(environment_stack: str) -> list[dict]:
    """The environment stack's resources in its checkpoint, pending deletions included."""
    directory = diy_backend.stacks_dir(settings.default_backend_url(), settings.ENV_PROJECT)
    assert directory is not None
    checkpoint = json.loads((directory / f"{environment_stack}.json").read_text())
    return checkpoint["checkpoint"]["latest"]["resources"]


def test_building_an_environment_again_keeps_its_image_and_one_resource_for_it():
    """A build runs ``up`` again on a stack that holds the image when the local record of it is lost
    (a client killed between the stack's ``up`` and the record, or a push that failed after the build):
    that ``up`` comes from another build context and must neither replace the image (its replacement
    has the same name, so deleting the old one would untag the new) nor leave a pending deletion."""
    environment = formatted.preview(1).environment
    assert formatted(1) == ("4.12.3", "1")
    index.forget(environment.hash)
    assert formatted.preview(2).environment.status == "build"
    before = updates(environment.stack)
    assert formatted(2) == ("4.12.3", "2")
    assert updates(environment.stack) == before + 1
    assert image_exists(environment.reference)
    images = [r for r in _resources(environment.stack) if r["type"] == "docker:index/remoteImage:RemoteImage"]
    assert len(images) == 1 and not images[0].get("delete"), images

    wait_for_teardowns()  # the call's container, which uses the image, goes with its run's teardown
    removed = subprocess.run(["docker", "image", "rm", environment.reference], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert formatted.preview(3).environment.status == "build"  # an image removed by hand is built again
    assert formatted(3) == ("4.12.3", "3")
    assert image_exists(environment.reference)


def test_toolkit_env_ls_and_prune_remove_the_images_and_their_stacks():
    formatted(1)  # at least one environment exists
    wait_for_teardowns()  # the call's container uses the image until its run's stack is destroyed
    listed = json.loads(toolkit("env", "ls", "--json").stdout)
    assert listed and all(item["present"] for item in listed)
    images = [item["reference"] for item in listed if item["kind"] == "image"]
    dry = json.loads(toolkit("env", "prune", "--dry-run", "--json").stdout)
    assert {item["environment"]["stack"] for item in dry} == {item["stack"] for item in listed}
    assert all(image_exists(image) for image in images)
    pruned = json.loads(toolkit("env", "prune", "--older-than", "0s", "--json").stdout)
    assert pruned and all(item["destroyed"] for item in pruned)
    assert env_stacks() == []
    assert not any(image_exists(image) for image in images)


def toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True,
                            timeout=600, env={**os.environ})
    assert result.returncode == 0, result.stderr
    return result
