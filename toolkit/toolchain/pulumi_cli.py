"""Build the Pulumi CLI from the Go module proxy at the version of the ``pulumi`` Python package.

``go install github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@vX`` fails: pkg's
go.mod has replace directives (``sdk/v3 => ../sdk`` and forks of a few
libraries) that ``go install`` refuses. So we generate a tiny wrapper module
that requires ``pkg/v3`` and ``sdk/v3`` at the same version and copies pkg's
non-local replace directives, then ``go build`` the command from it with the
version stamped at link time (the Automation API refuses an unversioned CLI).
Two dependencies are vendored with their start-up work deferred to first use
(``lazy_init.py``): it cost every CLI process 0.15 s of CPU.

This module imports only the standard library (and the toolkit's stdlib-only
modules), so ``python -m toolkit.toolchain.pulumi_cli pyproject.toml`` can
start the build before the toolkit's virtualenv exists (``main``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tomllib
from importlib.metadata import version as package_version
from pathlib import Path

from toolkit import settings
from toolkit.errors import ToolchainError
from toolkit.toolchain.lazy_init import RECIPE, vendor_patched_modules
from toolkit.toolchain.steps import Log, run, write_stamp

PKG = "github.com/pulumi/pulumi/pkg/v3"
SDK = "github.com/pulumi/pulumi/sdk/v3"
VERSION_SYMBOL = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"
_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)(?:\s+(\S+))?\s+=>\s+(\S+)(?:\s+(\S+))?\s*$")


def required_version() -> str:
    """The CLI version to build: exactly the installed ``pulumi`` package's."""
    return package_version("pulumi")


def go_binary() -> str:
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise ToolchainError("building the Pulumi CLI needs Go (https://go.dev/dl); install Go 1.24 or newer")
    return go


def go_env() -> dict[str, str]:
    """Only the module proxy is reachable: never fetch another Go toolchain."""
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}


def published_replaces(go_mod: str) -> list[str]:
    """pkg's replace directives that point at published modules (local paths are dropped)."""
    lines: list[str] = []
    in_block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if line.startswith("replace ("):
            in_block = True
            continue
        if in_block and line == ")":
            in_block = False
            continue
        if not (in_block or line.startswith("replace ")):
            continue
        match = _REPLACE.match(line)
        if not match:
            continue
        old, old_version, new, new_version = match.groups()
        if new.startswith((".", "/")):
            continue  # e.g. sdk/v3 => ../sdk: we require sdk at the same version instead
        left = f"{old} {old_version}" if old_version else old
        lines.append(f"replace {left} => {new} {new_version or ''}".rstrip())
    return lines


def build_pulumi_cli(version: str, work_dir: Path, out: Path, log: Log) -> Path:
    """Build ``pulumi`` v``version`` into ``out``; returns ``out``."""
    go = go_binary()
    env = go_env()
    tag = f"v{version}"
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"fetching {PKG}@{tag} from the Go module proxy")
    download = run([go, "mod", "download", "-json", f"{PKG}@{tag}"], f"download {PKG}@{tag}", cwd=work_dir, env=env)
    match = re.search(r'"GoMod":\s*"([^"]+)"', download)
    if not match:
        raise ToolchainError(f"the Go module proxy returned no go.mod for {PKG}@{tag}; is {tag} published?")
    replaces = published_replaces(Path(match.group(1)).read_text())
    (work_dir / "go.mod").write_text(
        "\n".join(
            [
                "module toolkit.local/pulumi-cli",
                "",
                "go 1.24",
                "",
                f"require (\n\t{PKG} {tag}\n\t{SDK} {tag}\n)",
                "",
                *replaces,
                "",
            ]
        )
    )
    (work_dir / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{PKG}/cmd/pulumi"\n')
    log("resolving dependencies (go mod tidy)")
    run([go, "mod", "tidy"], "go mod tidy for the Pulumi CLI", cwd=work_dir, env=env)
    log("vendoring dependencies with deferred start-up work (toolkit/toolchain/lazy_init.py)")
    with (work_dir / "go.mod").open("a") as go_mod:
        go_mod.write("\n".join(["", *vendor_patched_modules(work_dir, go, env), ""]))
    log(f"compiling pulumi {tag} (several minutes on a cold cache)")
    run(
        [go, "build", "-p", "2", "-trimpath", "-ldflags", f"-s -w -X {VERSION_SYMBOL}={tag}", "-o", str(out), f"{PKG}/cmd/pulumi"],
        f"go build of pulumi {tag}",
        cwd=work_dir,
        env=env,
    )
    reported = run([str(out), "version"], "pulumi version").strip()
    if reported != tag:
        raise ToolchainError(f"the built Pulumi CLI reports {reported!r}, expected {tag!r}")
    return out


def build_into_cache(version: str, log: Log) -> Path:
    """Build v``version`` as the toolkit's own CLI: ``settings.bin_dir()/pulumi`` with its recipe stamp."""
    target = settings.bin_dir() / "pulumi"
    target.parent.mkdir(parents=True, exist_ok=True)
    build_pulumi_cli(version, settings.cache_dir() / "build" / "pulumi-cli", target, log)
    write_stamp(target.with_name("pulumi.recipe"), RECIPE)
    return target


def pinned_version(pyproject: Path) -> str:
    """The ``pulumi==X`` pin of a checkout's pyproject.toml (the version its virtualenv will have)."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = [spec.split("==", 1)[1].strip() for spec in dependencies if re.match(r"pulumi\s*==", spec)]
    if not pins:
        raise ToolchainError(f"{pyproject} pins no pulumi version (pulumi==X)")
    return pins[0]


def main(argv: list[str]) -> int:
    """``python -m toolkit.toolchain.pulumi_cli PYPROJECT``: scripts/setup's head start on a machine with no
    Pulumi CLI at all, beside the virtualenv's install. Builds the version PYPROJECT pins only when no CLI is
    found anywhere; every other case (a CLI to check, an older build of the toolkit's) is left to
    ``toolkit toolchain install``, which runs next and finds this build."""
    if settings.pulumi_binary() is not None:
        return 0
    version = pinned_version(Path(argv[0]))
    print(f"no Pulumi CLI found: building v{version} from the Go module proxy", flush=True)
    try:
        built = build_into_cache(version, lambda line: print(line, flush=True))
    except ToolchainError as exc:
        print(f"could not build the Pulumi CLI: {exc}", file=sys.stderr)
        return 1
    print(f"built {built}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
