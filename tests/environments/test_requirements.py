"""What a call asks for: packages, requirements files, automatic pins, and pins that contradict each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.environments import requirements
from toolkit.errors import ConfigError, RequirementConflictError

LINUX = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
         "python_full_version": "3.11.2", "implementation_name": "cpython", "platform_machine": "x86_64",
         "os_name": "posix", "platform_python_implementation": "CPython"}


def test_packages_and_requirements_files_keep_their_origin(tmp_path: Path):
    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    (tmp_path / "reqs.txt").write_text("# tools\n-r base.txt\nhumanize>=4  # formatting\n\n")
    items = requirements.from_packages(["numpy>=2"]) + requirements.from_file("reqs.txt", tmp_path)
    assert [(i.name, i.source, i.origin) for i in items] == [
        ("numpy", "packages", "packages[0]"),
        ("six", "requirements", "base.txt:1"),
        ("humanize", "requirements", "reqs.txt:3"),
    ]


def test_bad_requirements_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"packages\[1\]: 'numpy>>2' is not a valid requirement"):
        requirements.from_packages(["six", "numpy>>2"])
    with pytest.raises(ConfigError, match=r"requirements file 'nope.txt' not found .*relative to the caller's working"):
        requirements.from_file("nope.txt", tmp_path)
    (tmp_path / "r.txt").write_text("--index-url https://example.invalid/simple\n")
    with pytest.raises(ConfigError, match=r"r.txt:1: pip option '--index-url' is not supported .*PIP_INDEX_URL"):
        requirements.from_file("r.txt", tmp_path)
    with pytest.raises(ConfigError, match="names a URL"):
        requirements.from_packages(["pkg @ https://example.invalid/pkg.whl"])


def test_contradicting_pins_are_refused_naming_both(tmp_path: Path):
    (tmp_path / "r.txt").write_text("humanize==4.11.0\n")
    items = requirements.from_packages(["humanize==4.12.3"]) + requirements.from_file("r.txt", tmp_path)
    with pytest.raises(RequirementConflictError, match=r"conflicting pins for 'humanize': 'humanize==4.12.3' \(packages, packages\[0\]\) and 'humanize==4.11.0' \(requirements, r.txt:1\)"):
        requirements.check_pins(items)
    with pytest.raises(RequirementConflictError):
        requirements.check_pins(requirements.from_packages(["six==1.16.0", "six>=1.17"]))
    requirements.check_pins(requirements.from_packages(["six==1.16.0", "six>=1.15,<2"]))


def test_explicit_requirements_replace_automatic_pins():
    auto = requirements.installed_closure({"humanize": {"humanize"}}, LINUX)
    assert [i.requirement for i in auto] == ["humanize==4.12.3"]
    combined = requirements.combine(auto, requirements.from_packages(["humanize==4.11.0"]))
    assert [(i.requirement, i.source) for i in combined] == [("humanize==4.11.0", "packages")]


def test_the_automatic_closure_pins_installed_dependencies():
    closure = {i.name: i for i in requirements.installed_closure({"requests": {"requests"}}, LINUX)}
    assert {"requests", "urllib3", "idna", "certifi", "charset-normalizer"} <= set(closure)
    assert closure["urllib3"].origin == "dependency of requests" and closure["urllib3"].source == "auto"
    assert all(item.requirement.startswith(f"{item.name}==") for item in closure.values())


def test_a_dependency_only_the_jobs_platform_needs_is_asked_for_by_its_specifier():
    """pip evaluates markers for its own interpreter, not the job's, so the closure names what the job adds."""
    windows = {**LINUX, "sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"}
    closure = {i.name: i for i in requirements.installed_closure({"docker": {"docker"}}, windows)}
    # docker needs pywin32 on Windows only (pywin32>=304; sys_platform == "win32"); not installed on this Linux.
    assert closure["pywin32"].requirement == "pywin32>=304"
    assert closure["pywin32"].origin == "dependency of docker (for the job's platform; not installed here)"
    assert closure["docker"].requirement.startswith("docker==")
    linux = {i.name for i in requirements.installed_closure({"docker": {"docker"}}, LINUX)}
    assert "pywin32" not in linux
