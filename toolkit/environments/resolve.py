"""Resolution and download on the caller's side, with pip and the caller's own pip configuration.

``pip download --only-binary=:all:`` with the base's Python version, ABIs and
platform tags resolves the requested set and fetches the wheels the base can
install; ``--report`` says what was chosen. What the base already has is a
constraint (the job must not replace the runner's own packages). The
caller's index settings (pip.conf, ``PIP_INDEX_URL``, ``PIP_FIND_LINKS``) apply
as they are, so private indexes and offline wheelhouses work; jobs never talk
to an index.

When pip finds no wheel for a distribution, its source distribution is built
into a wheel here; a pure-Python wheel (or any wheel, for the caller's own
interpreter) is used, anything else is a clear error. Other failures are
explained from pip's messages: a name the index does not know (with close
names from what is installed here), no version matching, conflicting pins.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from toolkit import settings
from toolkit.environments import index
from toolkit.environments.base import Base
from toolkit.environments.detect import RUNNER_DISTRIBUTIONS, module_distributions
from toolkit.environments.requirements import Requested
from toolkit.environments.spec import Pin
from toolkit.errors import (
    NoCompatibleWheelError,
    RequirementConflictError,
    RequirementError,
    RequirementNotFoundError,
    ToolchainError,
)

Say = Callable[[str], None]
_MAX_SOURCE_BUILDS = 5
_OTHER_PLATFORMS = (
    "win_amd64", "win32", "win_arm64", "macosx_11_0_arm64", "macosx_10_9_x86_64", "macosx_10_9_universal2",
    "manylinux_2_17_aarch64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "musllinux_1_1_x86_64",
    "linux_x86_64", "linux_aarch64",
)
"""Asked only to tell "no such distribution" from "no wheel for this platform"."""


def wheelhouse() -> Path:
    """Downloaded wheels, shared by every environment (pip skips files it already has)."""
    return settings.cache_dir() / "wheels"


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


MIN_PIP = "23.3"
"""The first pip whose ``install --dry-run --report`` accepts another platform's tags without ``--target``."""


def _pip_version() -> str | None:
    try:
        return metadata.version("pip")
    except metadata.PackageNotFoundError:
        return None


def _check_pip() -> None:
    """Resolution runs the caller's own pip; an older one fails with a message about ``--target``."""
    found = _pip_version()
    if found is None or Version(found) < Version(MIN_PIP):
        raise ToolchainError(
            f"environments resolve packages with this interpreter's pip, which is "
            f"{'missing' if found is None else found!r}; pip >= {MIN_PIP} is needed to resolve for a job's "
            f"platform. Run: {sys.executable} -m pip install 'pip>={MIN_PIP}'"
        )


def _target_options(base: Base) -> list[str]:
    """Wheel selection for the base: its interpreter, ABIs and platforms (nothing for the caller itself)."""
    if base.is_caller:
        return []
    options = ["--python-version", base.python, "--implementation", base.implementation]
    for abi in base.abis:
        options += ["--abi", abi]
    for platform in base.platforms:
        if platform != "any":
            options += ["--platform", platform]
    return options


def _constraints(base: Base, requested: list[Requested]) -> list[str]:
    """Versions the base's own packages keep.

    An image's environment sits under the image's site-packages, so what the
    image has is what loads: every one of its versions is a constraint. A
    virtualenv sits over the caller's packages, so an explicit request may
    replace one of them, except the runner's own dependencies.
    """
    asked = {item.name for item in requested} if base.kind == "interpreter" else set()
    return sorted(
        f"{name}=={version}"
        for name, version in base.distributions.items()
        if name not in asked or name in RUNNER_DISTRIBUTIONS
    )


def resolve(requested: list[Requested], base: Base, say: Say) -> list[Pin]:
    """Resolve ``requested`` for ``base`` and download its wheels; one ``Pin`` per wheel the base lacks."""
    _check_pip()
    # pip writes into the shared wheelhouse: concurrent resolutions take turns.
    with index.file_lock(wheelhouse() / ".lock"), tempfile.TemporaryDirectory(prefix="toolkit-resolve-") as scratch:
        work = Path(scratch)
        (work / "requirements.txt").write_text("".join(f"{item.requirement}\n" for item in requested))
        (work / "constraints.txt").write_text("".join(f"{line}\n" for line in _constraints(base, requested)))
        built = work / "built"
        built.mkdir()
        for _attempt in range(_MAX_SOURCE_BUILDS + 1):
            failure = _resolve(work, base, built, say)
            if failure is None:
                pins = _pins(work / "report.json", requested, base)
                _download(pins, work, base, built, say)
                return [pin.model_copy(update={"size": (wheelhouse() / pin.wheel).stat().st_size}) for pin in pins]
            missing = re.search(r"No matching distribution found for (\S+)", failure)
            if not missing:
                raise _explain(failure, requested, base)
            _build_from_source(missing.group(1), base, built, requested, say)
        raise RequirementError(f"more than {_MAX_SOURCE_BUILDS} distributions had to be built from source; "
                               "provide wheels for them in a wheelhouse (PIP_FIND_LINKS)")


def _resolve(work: Path, base: Base, built: Path, say: Say) -> str | None:
    """``pip install --dry-run --report``: the resolution alone (PEP 658 metadata, no wheels fetched
    where the index serves it); returns pip's output on failure (its explanations go to stdout)."""
    command = [
        *_pip(), "install", "--dry-run", "--ignore-installed", "--progress-bar", "off", "--only-binary=:all:",
        "--report", str(work / "report.json"), "--find-links", str(built), "--find-links", str(wheelhouse()),
        "-r", str(work / "requirements.txt"), "-c", str(work / "constraints.txt"),
        *_target_options(base),
    ]
    return _run_pip(command, ("Collecting",), say)


def _run_pip(command: list[str], shown: tuple[str, ...], say: Say) -> str | None:
    """Run pip, passing the lines starting with ``shown`` to ``say`` as they come; its full output on failure."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        if line.strip().startswith(shown):
            say(_shorten(line.strip()))
    return None if process.wait() == 0 else "".join(output)


def _download(pins: list[Pin], work: Path, base: Base, built: Path, say: Say) -> None:
    """``pip download`` of exactly the resolved wheels (hash-checked), streaming pip's progress lines."""
    wanted = [pin for pin in pins if not (wheelhouse() / pin.wheel).exists()]
    if not wanted:
        say(f"all {len(pins)} wheel(s) already downloaded")
        return
    (work / "pins.txt").write_text("".join(f"{pin.name}=={pin.version} --hash=sha256:{pin.sha256}\n" for pin in wanted))
    command = [
        *_pip(), "download", "--no-deps", "--progress-bar", "off", "--only-binary=:all:",
        "-d", str(wheelhouse()), "--find-links", str(built), "-r", str(work / "pins.txt"),
        *_target_options(base),
    ]
    errors = _run_pip(command, ("Downloading", "File was already downloaded", "Using cached"), say)
    if errors is not None:
        raise RequirementError(f"downloading the resolved wheels failed: {errors.strip()[-800:]}")
    for pin in wanted:
        if not (wheelhouse() / pin.wheel).exists():
            raise RequirementError(f"pip downloaded no {pin.wheel} for {pin.name}=={pin.version}; retry, or "
                                   "check the index serves that file")


def _shorten(line: str) -> str:
    """pip's lines name cache paths, URLs and our scratch files; keep the file name and size."""
    line = re.sub(r" \(from -r \S+ \(line \d+\)\)", "", line)
    return re.sub(r"\S*/([^/\s]+)", r"\1", line)


def _pins(report_path: Path, requested: list[Requested], base: Base) -> list[Pin]:
    """The wheels the resolution chose that the base lacks, from pip's installation report."""
    report = json.loads(report_path.read_text())
    sources = {item.name: item for item in requested}
    pins: list[Pin] = []
    for entry in report.get("install", []):
        name = canonicalize_name(entry["metadata"]["name"])
        version = entry["metadata"]["version"]
        if base.has(name) == version:
            continue  # the base has it (a constraint kept it there)
        info = entry["download_info"]
        filename = urllib.parse.unquote(info["url"].rsplit("/", 1)[-1])
        hashes = info.get("archive_info", {}).get("hashes") or {}
        local = Path(urllib.parse.unquote(urllib.parse.urlparse(info["url"]).path))
        sha256 = hashes.get("sha256") or (_sha256(local) if info["url"].startswith("file:") else "")
        item = sources.get(name)
        pins.append(
            Pin(
                name=name,
                version=version,
                wheel=filename,
                sha256=sha256,
                size=0,  # known once downloaded
                source=item.source if item else "dependency",
                origin=item.origin if item else "",
            )
        )
    return sorted(pins, key=lambda pin: pin.name)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(requirement: str, requested: list[Requested]) -> str:
    name = canonicalize_name(Requirement(requirement).name)
    item = next((item for item in requested if item.name == name), None)
    if item is None:
        return f"{requirement!r} (a dependency)"
    return f"{item.requirement!r} ({item.source}: {item.origin})"


def _build_from_source(requirement: str, base: Base, built: Path, requested: list[Requested], say: Say) -> None:
    """No wheel fits the base: build one from the sdist, if the result can run there."""
    what = _describe(requirement, requested)
    with tempfile.TemporaryDirectory(prefix="toolkit-sdist-") as scratch:
        fetched = subprocess.run(
            [*_pip(), "download", "--no-deps", "--no-binary=:all:", "--progress-bar", "off", "-d", scratch, requirement],
            capture_output=True, text=True,
        )
        if fetched.returncode != 0:
            raise _not_available(requirement, what, base, requested)
        sdist = next(Path(scratch).iterdir())
        say(f"building a wheel from {sdist.name} (no wheel on the index fits {base.describe()})")
        output = Path(scratch) / "wheel"
        wheel = subprocess.run(
            [*_pip(), "wheel", "--no-deps", "--progress-bar", "off", "-w", str(output), str(sdist)],
            capture_output=True, text=True,
        )
        if wheel.returncode != 0:
            raise NoCompatibleWheelError(
                f"{what} has no wheel for {base.describe()}, and building one from {sdist.name} failed: "
                f"{wheel.stderr.strip()[-500:]}. Provide a wheel in a wheelhouse (PIP_FIND_LINKS) or pick a "
                "version that has one"
            )
        made = next(output.glob("*.whl"))
        tags = parse_wheel_filename(made.name)[3]
        if not base.is_caller and not all(tag.platform == "any" for tag in tags):
            raise NoCompatibleWheelError(
                f"{what} has no wheel for {base.describe()}, and its source builds a platform-specific wheel "
                f"here ({made.name}) that the job's platform cannot load. Publish or build a wheel for "
                f"{base.platforms[0]} into a wheelhouse (PIP_FIND_LINKS), or pick a version that has one"
            )
        shutil.move(str(made), built / made.name)


def _index_versions(name: str, options: list[str]) -> list[str]:
    result = subprocess.run(
        [*_pip(), "index", "versions", "--json", name, *options], capture_output=True, text=True
    )
    if result.returncode != 0:
        return []
    try:
        return list(json.loads(result.stdout).get("versions", []))
    except ValueError:
        return []


def _not_available(requirement: str, what: str, base: Base, requested: list[Requested]) -> RequirementError:
    """Tell "no such distribution" from "no matching version" and "only wheels for other platforms"."""
    parsed = Requirement(requirement)
    versions = _index_versions(parsed.name, _target_options(base))
    if versions:
        return RequirementNotFoundError(
            f"no version of {parsed.name!r} satisfies {what}; versions with a wheel for the job: "
            f"{', '.join(versions[:8])}{' ...' if len(versions) > 8 else ''}. Change the version specifier"
        )
    other = ["--python-version", base.python]
    for platform in _OTHER_PLATFORMS:
        other += ["--platform", platform]
    elsewhere = _index_versions(parsed.name, other)
    if elsewhere:
        return NoCompatibleWheelError(
            f"{what} has no wheel for {base.describe()} and no source distribution to build one (the index "
            f"has wheels of {parsed.name} {', '.join(elsewhere[:3])} for other platforms only). Build a wheel "
            f"for {base.platforms[0]} into a wheelhouse (PIP_FIND_LINKS), or drop the requirement"
        )
    hint = _close_names(parsed.name)
    auto = " It was detected from the function's imports: set auto_packages=False and list packages= yourself" \
        if what.find("(auto") >= 0 else ""
    return RequirementNotFoundError(
        f"{what} cannot be resolved: the package index has no distribution named {parsed.name!r}.{hint}{auto}"
    )


def _close_names(name: str) -> str:
    """Suggestions from what is installed here, and from import names (``sklearn`` -> ``scikit-learn``)."""
    modules = module_distributions()
    if name in modules or name.lower() in modules:
        owners = modules.get(name) or modules[name.lower()]
        return f" {name!r} is an import name; its distribution is {owners[0]!r}."
    installed = sorted({canonicalize_name(d.metadata["Name"]) for d in metadata.distributions() if d.metadata["Name"]})
    close = difflib.get_close_matches(canonicalize_name(name), installed, n=3, cutoff=0.75)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _explain(errors: str, requested: list[Requested], base: Base) -> RequirementError:
    lines = [line.strip() for line in errors.splitlines() if line.strip()]
    if "ResolutionImpossible" in errors or "conflicting dependencies" in errors:
        causes = []
        capture = False
        for line in lines:
            if line.startswith("The conflict is caused by"):
                capture = True
                continue
            if capture and (line.startswith(("To fix", "Additionally", "ERROR")) or line.startswith("1.")):
                break
            if capture:
                causes.append(line.replace("(constraint)", "(already in the base)"))
        detail = "; ".join(causes) or (lines[-1] if lines else errors)
        return RequirementConflictError(
            f"the requirements for {base.describe()} conflict: {detail}. Loosen or change one of the pins "
            "(a pin on a package the base already has must match its version)"
        )
    detail = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else errors)
    return RequirementError(f"resolving the job's requirements failed: {detail}")
