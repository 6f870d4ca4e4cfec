"""Build the Pulumi ``docker`` resource provider plugin from the Go module proxy.

Why this exists: the ``pulumi_docker`` Python SDK needs the plugin
``pulumi-resource-docker`` at exactly its own version, but pulumi-docker's
provider module (``github.com/pulumi/pulumi-docker/provider/v5``) is not
published on the Go module proxy, and even its source does not build alone:
its go.mod replaces the upstream Terraform provider with a local, patched
submodule (``../upstream``). So the toolkit bridges the upstream Terraform
provider itself, with Go sources of its own in ``go/pulumi-resource-docker``:

* the upstream provider module (kreuzwerker/terraform-provider-docker, whose
  go.mod declares ``github.com/terraform-providers/terraform-provider-docker``)
  comes from the proxy and is made importable under that path by a ``replace``;
* ``shim/`` is a tiny nested module under that path which exposes the
  provider constructor from upstream's ``internal/provider`` package;
* ``resources.go`` maps every Terraform resource and data source onto the
  tokens and property names that the ``pulumi_docker`` SDK uses, and is run
  through pulumi-terraform-bridge's tfgen to produce the schema that the
  plugin embeds.

The build runs, in ``work_dir``: ``go mod download``, the tfgen build
(``-tags tfgen``), the schema generation, and the plugin build with the
version stamped through ``-ldflags -X main.Version=...``. It does not install
the plugin: the caller runs
``pulumi plugin install resource docker VERSION --file BINARY``.

Differences from the published provider: the native ``docker.Image`` resource
(docker build, not a Terraform resource) is not offered; everything else has
the same tokens, inputs and outputs as pulumi_docker 5.2.0.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from toolkit.errors import ToolchainError
from toolkit.toolchain.pulumi_cli import go_binary, go_env

#: The pulumi_docker version whose token mapping and upstream pin the Go
#: sources reproduce; building any other version would be a lie.
SUPPORTED_VERSION = "5.2.0"

#: The Go sources of the plugin, shipped with the toolkit.
GO_SOURCES = Path(__file__).resolve().parent / "go" / "pulumi-resource-docker"

#: Module path of the upstream Terraform provider, as its go.mod declares it.
UPSTREAM_MODULE = "github.com/terraform-providers/terraform-provider-docker"

BINARY_NAME = "pulumi-resource-docker"
TFGEN_NAME = "pulumi-tfgen-docker"

#: Seconds one step may take; a cold build downloads ~350 modules and
#: compiles for minutes on 2 cores.
STEP_TIMEOUT = 3600

_TAIL_LINES = 40


class DockerProviderBuildError(ToolchainError, RuntimeError):
    """A step of the docker provider plugin build failed."""


def build_docker_provider(
    version: str,
    work_dir: Path,
    log: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Build ``pulumi-resource-docker`` at ``version`` in ``work_dir``.

    ``version`` must be the installed pulumi_docker version (only
    ``SUPPORTED_VERSION`` is supported). ``env`` adds to or overrides the
    process environment of every step (e.g. ``GOMODCACHE``/``GOCACHE``).
    Returns the path of the built binary; raises DockerProviderBuildError (a
    RuntimeError) naming the failing step and the tail of its output.
    """
    go = _check_sources(version)
    work_dir = Path(work_dir).resolve()
    src, gen, bin_dir, logs = _fresh_work_dir(work_dir)
    step_env = {**go_env(), **(env or {})}
    ldflags = f"-X main.Version={version}"
    tfgen, binary = bin_dir / TFGEN_NAME, bin_dir / BINARY_NAME

    def step(name: str, argv: Sequence[str], extra_env: Mapping[str, str] | None = None) -> str:
        return _run(name, argv, cwd=src, env={**step_env, **(extra_env or {})}, logs=logs, log=log)

    log(f"docker provider {version}: building in {work_dir}")
    step("go mod download", [go, "mod", "download"])
    upstream_dir = step(
        "locate upstream module", [go, "list", "-m", "-f", "{{.Dir}}", UPSTREAM_MODULE]
    ).strip()
    # -trimpath on both builds so they share the compile cache.
    step(
        "build tfgen",
        [go, "build", "-p", "2", "-trimpath", "-buildvcs=false", "-tags", "tfgen", "-ldflags", ldflags, "-o", str(tfgen), "."],
    )
    step(
        "generate schema",
        [str(tfgen), "schema", "--out", str(gen), "--skip-examples"],
        extra_env={"DOCKER_UPSTREAM_DIR": upstream_dir},
    )
    schema = gen / "schema.json"
    if not schema.is_file() or schema.stat().st_size < 1000:
        raise DockerProviderBuildError(
            f"step 'generate schema' wrote no usable {str(schema)!r}; see {str(logs / 'generate-schema.log')!r}."
        )
    shutil.copyfile(schema, src / "schema-embed.json")
    metadata = gen / "bridge-metadata.json"
    if metadata.is_file():
        shutil.copyfile(metadata, src / "bridge-metadata.json")
    step(
        "build plugin",
        [go, "build", "-p", "2", "-trimpath", "-buildvcs=false", "-ldflags", f"-s -w {ldflags}", "-o", str(binary), "."],
    )
    reported = step("check plugin version", [str(binary), "-version"]).strip()
    if reported != version:
        raise DockerProviderBuildError(
            f"the built plugin {str(binary)!r} reports version {reported!r}, expected {version!r}."
        )
    log(f"docker provider {version}: built {binary} ({binary.stat().st_size // (1024 * 1024)} MiB)")
    return binary


def _check_sources(version: str) -> str:
    """The Go binary, once ``version`` is the one the sources reproduce and the sources are there."""
    if version != SUPPORTED_VERSION:
        raise DockerProviderBuildError(
            f"cannot build the docker provider plugin at version {version!r}: the Go "
            f"sources in {str(GO_SOURCES)!r} reproduce pulumi_docker {SUPPORTED_VERSION!r} "
            f"only. Install pulumi-docker=={SUPPORTED_VERSION} or update those sources."
        )
    go = go_binary()
    if not (GO_SOURCES / "go.mod").is_file():
        raise DockerProviderBuildError(
            f"the Go sources of the docker provider are missing: {str(GO_SOURCES)!r} has no go.mod."
        )
    return go


def _fresh_work_dir(work_dir: Path) -> tuple[Path, Path, Path, Path]:
    """``(src, gen, bin, logs)`` under ``work_dir``: the sources copied afresh, nothing generated yet."""
    src, gen, bin_dir, logs = work_dir / "src", work_dir / "gen", work_dir / "bin", work_dir / "logs"
    for path in (src, gen):
        shutil.rmtree(path, ignore_errors=True)
    for path in (bin_dir, logs):
        path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(GO_SOURCES, src, ignore=shutil.ignore_patterns("schema-embed.json", "bin", "gen"))
    # A fresh, empty metadata file: the tfgen build embeds it, tfgen rewrites it.
    (src / "bridge-metadata.json").write_text("{}\n")
    return src, gen, bin_dir, logs


def _run(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    logs: Path,
    log: Callable[[str], None],
) -> str:
    """Run one build step with its output in logs/<step>.log; return stdout."""
    log_file = logs / (name.replace(" ", "-") + ".log")
    log(f"docker provider: {name}: {' '.join(argv)}")
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        output = (exc.stdout or "") + (exc.stderr or "")
        log_file.write_text(output)
        raise DockerProviderBuildError(
            f"docker provider build step {name!r} failed with exit code {exc.returncode} "
            f"({' '.join(argv)}); full output in {str(log_file)!r}. Last lines:\n{_tail(output)}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        log_file.write_text(output)
        raise DockerProviderBuildError(
            f"docker provider build step {name!r} did not finish within {STEP_TIMEOUT} s "
            f"({' '.join(argv)}). Last lines:\n{_tail(output)}"
        ) from exc
    except OSError as exc:
        raise DockerProviderBuildError(
            f"docker provider build step {name!r} could not start ({' '.join(argv)}): {exc}"
        ) from exc
    log_file.write_text(done.stdout + done.stderr)
    log(f"docker provider: {name}: done in {time.monotonic() - started:.0f} s")
    return done.stdout


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _tail(output: str) -> str:
    return "\n".join(output.strip().splitlines()[-_TAIL_LINES:])
