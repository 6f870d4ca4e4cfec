"""Bad environment input: each a clear error before any run stack exists, with nothing provisioned.

Process-target cases run on the caller's interpreter; the cases that need an
image's platform or Python run against the docker target's runner image.
"""

from __future__ import annotations

import pytest

from tests.environments.conftest import env_stacks, fake_sdist, fake_wheel
from tests.leaks import assert_nothing_left
from toolkit import docker, process
from toolkit.environments import base as environment_base
from toolkit.errors import (
    IncludeFilesError,
    MissingModuleError,
    NoCompatibleWheelError,
    RequirementConflictError,
    RequirementNotFoundError,
    RuntimeMismatchError,
    ToolchainError,
)
from toolkit.futures import wait_for_teardowns


@pytest.fixture(autouse=True)
def _nothing_provisioned():
    stacks = env_stacks()
    yield
    wait_for_teardowns()
    assert_nothing_left()
    assert env_stacks() == stacks


def job() -> str:
    return "never runs"


def uses_a_module_installed_nowhere() -> str:
    import toolkit_test_nowhere  # noqa: F401  (no distribution here or in any base provides it)

    return "never runs"


def test_a_module_installed_on_neither_side_is_named_with_how_to_fix():
    with pytest.raises(MissingModuleError) as info:
        process(uses_a_module_installed_nowhere).submit()
    message = str(info.value)
    assert "uses_a_module_installed_nowhere imports 'toolkit_test_nowhere', which this interpreter" in message
    assert "-m pip install toolkit_test_nowhere" in message and "packages=[...]" in message


@pytest.mark.docker
def test_a_module_neither_here_nor_in_the_image_is_named_with_how_to_fix():
    with pytest.raises(MissingModuleError, match=r"imports 'toolkit_test_nowhere', which neither this interpreter .* nor "
                                                 r"the job's image .*toolkit-runner.* has: .*packages=\[\.\.\.\]"):
        docker(uses_a_module_installed_nowhere).submit()


def test_a_pip_too_old_to_resolve_for_the_job_says_how_to_upgrade(monkeypatch: pytest.MonkeyPatch):
    from toolkit.environments import resolve

    monkeypatch.setattr(resolve, "_pip_version", lambda: "23.2.1")  # what `python -m venv` seeds on 3.11
    with pytest.raises(ToolchainError, match=r"pip, which is '23.2.1'; pip >= 23.3 .* -m pip install 'pip>=23.3'"):
        process(packages=["six==1.15.0"])(job).submit()


def test_an_unknown_distribution_is_named_with_close_names():
    with pytest.raises(RequirementNotFoundError) as info:
        process(packages=["hummanize"])(job).submit()
    message = str(info.value)
    assert "'hummanize' (packages: packages[0]) cannot be resolved" in message
    assert "has no distribution named 'hummanize'. Did you mean 'humanize'?" in message


def test_an_import_name_suggests_its_distribution():
    with pytest.raises(RequirementNotFoundError, match=r"'dateutil' is an import name; its distribution is 'python-dateutil'"):
        process(packages=["dateutil"])(job).submit()


def test_a_version_that_does_not_exist_lists_the_ones_that_do():
    with pytest.raises(RequirementNotFoundError, match=r"no version of 'humanize' satisfies 'humanize==99\.0' .*4\.12\.3"):
        process(packages=["humanize==99.0"])(job).submit()


def test_conflicting_pins_between_packages_and_requirements(project):
    (project / "requirements.txt").write_text("humanize==4.11.0\n")
    with pytest.raises(RequirementConflictError, match=r"conflicting pins for 'humanize': 'humanize==4.12.3' \(packages"):
        process(packages=["humanize==4.12.3"], requirements="requirements.txt")(job).submit()


def test_conflicting_pins_found_by_the_resolver():
    with pytest.raises(RequirementConflictError, match=r"conflict: .*requests 2\.31\.0 depends on urllib3<3 and >=1\.21\.1"):
        process(packages=["requests==2.31.0", "urllib3==1.20"])(job).submit()


def test_include_files_matching_nothing(project):
    with pytest.raises(IncludeFilesError, match=r"pattern 'data/\*\.parquet' matches nothing"):
        process(include_files=["data/*.parquet"])(job).submit()


def test_include_files_over_the_size_limit(project):
    (project / "data" / "big.bin").write_bytes(b"\0" * 200_000)
    with pytest.raises(IncludeFilesError, match=r"over the limit of 0\.1 MB"):
        process(include_files=["data"], include_files_max_mb=0.1)(job).submit()


def test_a_secret_swept_in_by_a_glob(project):
    (project / "data" / ".env").write_text("TOKEN=abc\n")
    with pytest.raises(IncludeFilesError, match=r"sweeps in 'data/\.env', which looks like a secret"):
        process(include_files=["data/*"])(job).submit()


@pytest.mark.docker
def test_no_wheel_for_the_images_platform_and_no_source(wheelhouse):
    fake_wheel(wheelhouse, "toolkit-test-native-demo", "1.0", "cp311-cp311-win_amd64")
    with pytest.raises(NoCompatibleWheelError) as info:
        docker(packages=["toolkit-test-native-demo"])(job).submit()
    message = str(info.value)
    assert "has no wheel for" in message and "manylinux" in message and "Python 3.11" in message
    assert "no source distribution to build one" in message and "PIP_FIND_LINKS" in message


@pytest.mark.docker
@pytest.mark.slow
def test_a_source_distribution_that_builds_only_a_platform_wheel_here(wheelhouse):
    fake_sdist(wheelhouse, "toolkit-test-c-demo", "1.0", c_extension=True)
    with pytest.raises(NoCompatibleWheelError, match=r"its source builds a platform-specific wheel here \(toolkit_test_c_demo-1\.0-cp311-cp311-linux_x86_64\.whl\)"):
        docker(packages=["toolkit-test-c-demo"])(job).submit()


@pytest.mark.docker
def test_a_pin_against_the_images_own_runner_packages():
    with pytest.raises(RequirementConflictError, match=r"'fsspec==2024\.2\.0' \(packages: packages\[0\]\) conflicts with fsspec"):
        docker(packages=["fsspec==2024.2.0"])(job).submit()


@pytest.mark.docker
def test_a_caller_python_the_image_cannot_unpickle(monkeypatch):
    monkeypatch.setattr(environment_base, "caller_python", lambda: "3.12")
    with pytest.raises(RuntimeMismatchError, match=r"runs Python 3\.11\.\d+, but this caller runs Python 3\.12"):
        docker(job).submit()
