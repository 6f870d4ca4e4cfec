"""The runner image for the docker target, built with no registry.

Base: a Debian root filesystem from Debian's own packages (``debootstrap
--variant=minbase`` with python3), imported into the engine as
``toolkit-base:bookworm`` and cached as a tarball. On top: a venv holding the
toolkit (a wheel built from the installed package, so a wheel install works
as well as a checkout) and its job-side dependencies (cloudpickle, fsspec),
installed from wheels built on the host (the containers here don't trust the host's TLS
proxy, so nothing is downloaded inside them), and a non-root ``toolkit`` user.
Tagged ``toolkit-runner:<toolkit version>``; a content hash label says when
the toolkit's sources changed and the image must be rebuilt.

Variants for object storage: jobs whose run storage is a bucket (the
kubernetes target's pools) need that storage's fsspec driver too.
``toolkit-runner:<version>-s3`` adds ``s3fs`` and its installed dependency
closure, pinned to the host's versions, from the same host-built wheels.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, requires
from importlib.metadata import version as package_version
from pathlib import Path

from toolkit import settings
from toolkit._version import __version__
from toolkit.errors import ToolchainError
from toolkit.toolchain.steps import Log, run

BASE_IMAGE = "toolkit-base:bookworm"
BASE_TARBALL = "bookworm-minbase.tar"
HASH_LABEL = "toolkit.content-hash"
RUNNER_UID = 1000
JOB_DEPENDENCIES = ("cloudpickle", "fsspec")
JOB_MODULES = (
    "__init__.py", "_version.py", "runner.py", "job_storage.py", "storage_urls.py", "bundles.py", "errors.py",
    "gcp_secret_env.py",
)
"""The toolkit modules a job imports (tests/test_public_api.py checks the runner needs no others)."""
STORAGE_DRIVERS = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}
"""Storage scheme -> the fsspec driver a runner image variant adds (tag suffix: the scheme)."""
DEBIAN_MIRROR = "http://deb.debian.org/debian"

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/toolkit \\
 && /opt/toolkit/bin/pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \\
 && rm -rf /tmp/wheels \\
 && useradd --uid {RUNNER_UID} --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin toolkit
ENV PATH=/opt/toolkit/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER {RUNNER_UID}:{RUNNER_UID}
WORKDIR /tmp
"""


def runner_image_name(storage: str | None = None) -> str:
    """``toolkit-runner:<version>``, or ``...-<scheme>`` for the variant with that storage driver."""
    return settings.runner_image(storage)


def _requirement_names(distribution: str) -> list[str]:
    """Names a distribution requires unconditionally or by environment marker (extras' needs excluded)."""
    names = []
    for requirement in requires(distribution) or []:
        if re.search(r"\bextra\s*==", requirement):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(match.group(1))
    return names


def installed_closure(distribution: str) -> list[str]:
    """``name==version`` of ``distribution`` and everything it needs, as installed here.

    A requirement that is not installed is one whose environment marker excluded
    it on this (same platform, same Python) host, so it is left out.
    """
    pins: dict[str, str] = {}
    pending = [distribution]
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in pins:
            continue
        try:
            pins[key] = f"{name}=={package_version(name)}"
        except PackageNotFoundError:
            continue
        pending.extend(_requirement_names(name))
    return sorted(pins.values())


def _driver_pins(storage: str | None) -> list[str]:
    if storage is None:
        return []
    if storage not in STORAGE_DRIVERS:
        raise ToolchainError(f"no runner image variant for storage {storage!r}; known: {', '.join(STORAGE_DRIVERS)}")
    try:
        package_version(STORAGE_DRIVERS[storage])
    except PackageNotFoundError:
        raise ToolchainError(
            f"the {storage!r} runner image needs {STORAGE_DRIVERS[storage]!r} installed here (its wheels are "
            f"built from this environment): pip install {STORAGE_DRIVERS[storage]}"
        ) from None
    return installed_closure(STORAGE_DRIVERS[storage])


STAGED_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "toolkit"
version = "{version}"
description = "The toolkit as jobs run it: its modules, without dependencies (the image adds cloudpickle and fsspec)."
requires-python = ">=3.11"

[tool.setuptools.packages.find]
include = ["toolkit*"]
"""


def stage_toolkit_project(into: Path) -> Path:
    """A buildable copy of the toolkit as installed here (checkout, editable or wheel install alike).

    Built from the package directory itself rather than a source tree, because
    a user's install from a wheel has no source tree (and ``toolkit`` on a
    package index is not this project).
    """
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, into / "toolkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "go"))
    (into / "pyproject.toml").write_text(STAGED_PYPROJECT.format(version=__version__))
    return into


def content_hash(storage: str | None = None) -> str:
    """Hash of what the job side runs: its modules, dependency versions, Dockerfile.

    Only the modules a job imports count: the rest of the package is in the
    image too but never runs there, so changing it must not force a rebuild.
    """
    digest = hashlib.sha256(DOCKERFILE.encode())
    for pin in _driver_pins(storage):
        digest.update(pin.encode())
    package = Path(__file__).resolve().parents[1]
    for name in JOB_MODULES:
        digest.update(name.encode())
        digest.update((package / name).read_bytes())
    for name in JOB_DEPENDENCIES:
        digest.update(f"{name}=={package_version(name)}".encode())
    return digest.hexdigest()[:16]


def _image_label(image: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{HASH_LABEL}" }}}}', image],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def runner_image_status() -> tuple[str, bool]:
    """``(image name, up to date)`` for doctor."""
    image = runner_image_name()
    return image, _image_label(image) == content_hash()


def base_image_cached(cache: Path) -> bool:
    """Whether the base image's root filesystem is cached (no debootstrap needed); asks no engine."""
    return (cache / BASE_TARBALL).exists()


def ensure_base_image(cache: Path, log: Log) -> str:
    """Import the Debian base image, running debootstrap only when no cached tarball exists."""
    if image_exists(BASE_IMAGE):
        return "present"
    tarball = cache / BASE_TARBALL
    outcome = "imported cached root filesystem"
    if not tarball.exists():
        if shutil.which("debootstrap") is None:
            if os.geteuid() != 0:
                raise ToolchainError("building the base image needs debootstrap: apt-get install -y debootstrap (as root)")
            run(["apt-get", "install", "-y", "-qq", "debootstrap"], "apt-get install debootstrap",
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="toolkit-rootfs-", dir=cache) as rootfs:
            log("debootstrap bookworm (minbase + python3), about a minute")
            run(
                ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", rootfs, DEBIAN_MIRROR],
                "debootstrap",
            )
            run(["tar", "-C", rootfs, "-cf", str(tarball) + ".tmp", "."], "tar root filesystem")
            os.replace(str(tarball) + ".tmp", tarball)
        outcome = "debootstrapped and imported"
    with tarball.open("rb") as handle:
        result = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=handle, capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolchainError(f"docker import of the base image failed: {result.stderr.strip()}")
    return outcome


def build_wheels(target: Path, log: Log, storage: str | None = None) -> None:
    """Wheels of the toolkit (no deps), its job-side dependencies and a storage driver, built on the host."""
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(target)]
    log("building wheels: toolkit, " + ", ".join(JOB_DEPENDENCIES))
    with tempfile.TemporaryDirectory(prefix="toolkit-project-") as staging:
        run([*pip, "--no-deps", str(stage_toolkit_project(Path(staging)))], "pip wheel toolkit")
    pinned = [f"{name}=={package_version(name)}" for name in JOB_DEPENDENCIES]
    run([*pip, "--no-deps", *pinned], "pip wheel " + " ".join(pinned))
    drivers = [pin for pin in _driver_pins(storage) if pin.split("==")[0] not in JOB_DEPENDENCIES]
    if drivers:
        log(f"building wheels for {storage} storage: " + ", ".join(drivers))
        run([*pip, "--no-deps", *drivers], f"pip wheel of the {storage} storage driver")


def ensure_runner_image(cache: Path, log: Log, storage: str | None = None) -> str:
    """Build ``toolkit-runner:<version>[-<storage>]`` unless an image with the same content hash exists."""
    image = runner_image_name(storage)
    wanted = content_hash(storage)
    if _image_label(image) == wanted:
        return f"{image} up to date"
    with tempfile.TemporaryDirectory(prefix="toolkit-image-") as context:
        build_wheels(Path(context) / "wheels", log, storage)
        (Path(context) / "Dockerfile").write_text(DOCKERFILE)
        log(f"docker build {image}")
        run(
            ["docker", "build", "--quiet", "--force-rm", "--label", f"{HASH_LABEL}={wanted}", "-t", image, context],
            f"docker build {image}",
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    return f"built {image}"
