"""The package as users get it: ``python -m build``, then the wheel in a fresh venv outside the repository.

The venv holds only the wheel and its dependencies (pip may reuse its cache),
``TOOLKIT_HOME`` and ``PULUMI_HOME`` are empty, and no ``PYTHONPATH`` leads back
to the checkout. The toolkit cache is seeded with the binaries this machine
already has (the Pulumi CLI and the docker plugin), so nothing is rebuilt:
``toolkit toolchain install`` must then only check, write the language host
for the venv's interpreter and build the runner image from the installed
package (there is no source tree to build it from). A ``@process`` and a
``@docker`` call must run from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest

import toolkit
from tests.leaks import assert_nothing_left
from tests.toolchain_fakes import real_pulumi
from toolkit.toolchain import plugins

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[1]

CALLS = textwrap.dedent(
    """
    import json
    import sys

    import toolkit

    @toolkit.process
    def add(a, b):
        import toolkit
        return a + b, sys.executable, toolkit.__file__

    @toolkit.docker
    def where():
        import toolkit
        return sys.executable, toolkit.__file__

    print(json.dumps({"process": add(2, 3), "docker": where()}))
    """
)


def _run(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _package_files(root: Path) -> set[str]:
    """The files under ``toolkit/toolchain/go`` and the job side's modules, as paths inside the package."""
    go = {str(p.relative_to(REPO)) for p in (REPO / "toolkit" / "toolchain" / "go").rglob("*") if p.is_file()}
    return go | {"toolkit/runner.py", "toolkit/bundles.py", "toolkit/_version.py", "toolkit/toolchain/program_exec.py"}


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def _seed_cache(cache: Path) -> None:
    """The binaries this machine has, where a warm toolkit cache keeps them: no Go build can be needed."""
    bin_dir = cache / "bin"
    bin_dir.mkdir(parents=True)
    _link(real_pulumi(), bin_dir / "pulumi")
    recipe = real_pulumi().with_name("pulumi.recipe")
    if recipe.exists():  # the toolkit's own build: its recipe stamp, or it counts as an old build and is rebuilt
        shutil.copy2(recipe, bin_dir / "pulumi.recipe")
    docker = plugins.spec_of("pulumi_docker")
    found = plugins.status(docker)
    assert found.present, "the docker plugin is not installed; run `toolkit toolchain install`"
    location = Path(found.location)
    binary = location / "pulumi-resource-docker" if location.is_dir() else location
    _link(binary, bin_dir / "pulumi-resource-docker")
    (bin_dir / "pulumi-resource-docker.version").write_text(docker.version + "\n")


def test_the_wheel_installs_and_works_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    built = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], dict(os.environ), REPO)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    version = toolkit.__version__
    wheel, sdist = dist / f"toolkit-{version}-py3-none-any.whl", dist / f"toolkit-{version}.tar.gz"
    wanted = _package_files(REPO)
    assert wanted <= set(zipfile.ZipFile(wheel).namelist())
    sdist_names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    assert wanted <= sdist_names and "CHANGELOG.md" in sdist_names

    venv, home, cache, work = tmp_path / "venv", tmp_path / "home", tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "TOOLKIT_PULUMI", "TOOLKIT_OFFLINE", "TOOLKIT_POOLS_URL", "TOOLKIT_BACKEND_URL")}
    image = f"toolkit-runner:{version}-wheel-{uuid.uuid4().hex[:8]}"
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "TOOLKIT_HOME": str(home),
        "TOOLKIT_CACHE_DIR": str(cache),
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "TOOLKIT_RUNNER_IMAGE": image,
        "VIRTUAL_ENV": str(venv),
    }
    installed = _run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet", str(wheel)], env, work)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert _run([str(venv / "bin" / "pip"), "check"], env, work).returncode == 0
    _seed_cache(cache)
    toolkit_cli = str(venv / "bin" / "toolkit")
    try:
        before = _run([toolkit_cli, "doctor", "--json"], env, work)
        found = {check["component"]: check for check in json.loads(before.stdout)}
        assert found["Pulumi CLI"]["ok"] and "from toolkit cache" in found["Pulumi CLI"]["detail"]

        setup = _run([toolkit_cli, "toolchain", "install"], env, work)
        assert setup.returncode == 0, setup.stderr[-4000:]
        assert "Go module proxy" not in setup.stderr and "debootstrap" not in setup.stderr  # nothing rebuilt
        assert f"built {image}" in setup.stderr

        doctor = _run([toolkit_cli, "doctor"], env, work)
        assert doctor.returncode == 0, doctor.stdout
        assert "pools: local-docker" in doctor.stdout

        script = work / "calls.py"
        script.write_text(CALLS)
        calls = _run([str(venv / "bin" / "python"), str(script)], env, work)
        assert calls.returncode == 0, calls.stderr[-4000:]
        result = json.loads(calls.stdout.strip().splitlines()[-1])
        site = str(venv / "lib")
        assert result["process"][0] == 5 and result["process"][2].startswith(site)  # the venv's toolkit, not the checkout's
        assert result["docker"][0].startswith("/opt/toolkit/bin/") and result["docker"][1].startswith("/opt/toolkit/lib/")
        assert_nothing_left(home=home)  # the installed toolkit's own TOOLKIT_HOME and its default backend
    finally:
        subprocess.run(["docker", "image", "rm", "--force", image], capture_output=True, timeout=120)
