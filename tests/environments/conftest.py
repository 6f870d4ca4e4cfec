"""Shared pieces of the environment tests: a project directory as the caller's cwd and a local
wheelhouse for packages the index must not have. (The session removes every environment it
built: tests/conftest.py.)"""

from __future__ import annotations

import os
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.leaks import no_stack_ever_made
from toolkit import settings
from toolkit.environments import stack


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The caller's working directory: data files and a local package that imports humanize."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scores.csv").write_text("name,score\nada,3\nbob,5\n")
    (tmp_path / "teamlib").mkdir()
    (tmp_path / "teamlib" / "__init__.py").write_text("")
    (tmp_path / "teamlib" / "report.py").write_text(textwrap.dedent("""
        import humanize

        def total(scores):
            return humanize.intcomma(sum(scores) * 1000)
    """))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def env_stacks() -> list[str]:
    if no_stack_ever_made(settings.default_backend_url(), settings.ENV_PROJECT):
        return []
    return [name for name, _tag in stack.list_stacks(settings.default_backend_url())]


def updates(environment_stack: str) -> int:
    return stack.updates(environment_stack, settings.default_backend_url())


def fake_wheel(directory: Path, name: str, version: str, tag: str) -> Path:
    """A minimal valid wheel of ``name`` with wheel tag ``tag`` (e.g. only for Windows)."""
    module = name.replace("-", "_")
    path = directory / f"{module}-{version}-{tag}.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "VALUE = 1\n")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def fake_sdist(directory: Path, name: str, version: str, c_extension: bool = False) -> Path:
    """A setuptools source distribution of ``name`` (pure Python, or with a C extension)."""
    import io
    import tarfile

    module = name.replace("-", "_")
    root = f"{module}-{version}"
    files = {
        "pyproject.toml": textwrap.dedent(f"""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "{version}"
        """),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{module}/__init__.py": "VALUE = 'built from source'\n",
    }
    if c_extension:
        files["setup.py"] = (
            "from setuptools import Extension, setup\n"
            f"setup(ext_modules=[Extension('{module}._speed', ['{module}/speed.c'])])\n"
        )
        files[f"{module}/speed.c"] = (
            "#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"_speed\"};\n"
            "PyMODINIT_FUNC PyInit__speed(void) { return PyModule_Create(&m); }\n"
        )
    path = directory / f"{root}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for relative, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{relative}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory pip searches as well as the index (``PIP_FIND_LINKS``), as a team's wheelhouse would be."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    existing = os.environ.get("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{existing} {directory}".strip())
    return directory
