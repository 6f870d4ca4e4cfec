"""The imports a job will run, checked before anything exists: which count, and what provides a module.

The refusals themselves (process and docker) are in test_bad_input.py; a
package installed mid-session in test_installed_meanwhile.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.environments.conftest import fake_wheel
from toolkit.environments import detect, imports, lifecycle
from toolkit.environments.variables import EnvironmentSettings
from toolkit.errors import TargetUnavailableError


def imported(fn) -> set[str]:
    return detect.walk_call(fn, (), {}).imported


def test_plain_imports_count_guarded_and_relative_ones_do_not():
    def plain():
        import json  # noqa: F401

        import toolkit_test_nowhere.sub  # noqa: F401

    def guarded():
        try:
            import toolkit_test_nowhere  # noqa: F401
        except ImportError:
            return None

    def relative():
        from . import sibling  # noqa: F401
        from .sibling import name  # noqa: F401

    def in_a_with_block():
        with open(__file__):
            import toolkit_test_nowhere  # noqa: F401

    assert imported(plain) == {"json", "toolkit_test_nowhere.sub"}
    assert imported(guarded) == set()
    assert imported(relative) == set()
    assert imported(in_a_with_block) == {"toolkit_test_nowhere"}  # a with block catches nothing
    assert detect.not_importable_here(imported(plain)) == ["toolkit_test_nowhere"]


def test_a_wheels_top_level_modules(tmp_path: Path):
    assert imports.wheel_modules(fake_wheel(tmp_path, "toolkit-test-pkg", "1.0", "py3-none-any")) == {"toolkit_test_pkg"}
    flat = tmp_path / "flat-1.0-py3-none-any.whl"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("flat.py", "")
        archive.writestr("_flat_speed.cpython-311-x86_64-linux-gnu.so", "")
        archive.writestr("flat-1.0.data/purelib/flat_extra/__init__.py", "")
        archive.writestr("flat-1.0.data/scripts/flat-cli", "")
        archive.writestr("flat-1.0.dist-info/METADATA", "")
    assert imports.wheel_modules(flat) == {"flat", "_flat_speed", "flat_extra"}
    assert imports.wheel_modules(tmp_path / "missing.whl") is None


def uses_a_module_installed_nowhere() -> None:
    import toolkit_test_nowhere  # noqa: F401


def test_a_module_an_explicit_package_installs_is_not_refused(
    wheelhouse: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    fake_wheel(wheelhouse, "toolkit-test-nowhere", "1.0", "py3-none-any")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the wheelhouse alone: no index asked
    settings = EnvironmentSettings(packages=("toolkit-test-nowhere",))
    plan = lifecycle.plan(uses_a_module_installed_nowhere, (), {}, settings, "interpreter", None, "local-process",
                          tmp_path)
    assert plan.status == "build" and [pin.name for pin in plan.environment.pins] == ["toolkit-test-nowhere"]


def _no_engine(image: str) -> None:
    raise TargetUnavailableError("the Docker engine is not reachable")


def test_a_remote_call_with_nothing_to_build_needs_no_docker_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A cloud pool's job pulls its image itself: a caller with no engine can still call it, unless its
    environment must be built on that image."""
    monkeypatch.setattr(lifecycle, "image_id", _no_engine)

    def plain() -> int:
        return 1

    plan = lifecycle.plan(plain, (), {}, EnvironmentSettings(), "image", "reg.example.com/runner:1", "ml", tmp_path,
                          remote=True)
    assert plan.status == "base" and plan.base is None
    with pytest.raises(TargetUnavailableError, match="not reachable"):
        lifecycle.plan(plain, (), {}, EnvironmentSettings(packages=("six==1.16.0",)), "image",
                       "reg.example.com/runner:1", "ml", tmp_path, remote=True)
