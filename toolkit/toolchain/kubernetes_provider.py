"""Build the Pulumi ``kubernetes`` resource provider plugin from the Go module proxy.

Why this exists: the ``pulumi_kubernetes`` Python SDK needs the plugin
``pulumi-resource-kubernetes`` at exactly its own version, and no download site
is reachable here. The provider is a plain Go module
(``github.com/pulumi/pulumi-kubernetes/provider/v4``) whose go.mod has one
local replace, ``sdk/v4 => ../sdk``; ``go install`` refuses that, so as for the
Pulumi CLI a tiny wrapper module requires the provider and a published
``sdk/v4`` and copies the provider's other (published) replace directives.

The upstream command (``cmd/pulumi-resource-kubernetes``) cannot be built
from the module either: it embeds ``schema-embed.json``, which its
``go generate`` step writes from the committed ``schema.json`` with the
release version filled in. The wrapper does the same in Python and has its own
three-line ``main`` calling the provider's ``Serve`` with that schema. The
version is stamped through ``-ldflags -X .../pkg/version.Version=...``.

Source selection: the release tag ``v<version>`` when the proxy serves it.
Where it does not (this workplace's proxy serves a single pseudo-version of
the provider module, no release tag), ``FALLBACK_SOURCES`` names the commit
that is built instead, and the build says so in its log and in
``<binary>.source`` (which ``toolkit doctor`` shows).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolchainError
from toolkit.toolchain.pulumi_cli import go_binary, go_env, published_replaces
from toolkit.toolchain.steps import Log, run

PROVIDER = "github.com/pulumi/pulumi-kubernetes/provider/v4"
SDK = "github.com/pulumi/pulumi-kubernetes/sdk/v4"
VERSION_SYMBOL = f"{PROVIDER}/pkg/version.Version"
BINARY_NAME = "pulumi-resource-kubernetes"
SCHEMA_DIR = "cmd/pulumi-resource-kubernetes"

MAIN_GO = f"""\
// The provider's own command, minus its go:generate step (done by the toolkit).
package main

import (
\t_ "embed"

\t"{PROVIDER}/pkg/provider"
\t"{PROVIDER}/pkg/version"
)

//go:embed schema-embed.json
var schema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {{ provider.Serve("kubernetes", version.Version, schema, terraformMapping) }}
"""


@dataclass(frozen=True)
class ProviderSource:
    """Which code is built for a plugin version: module versions of the provider and its SDK."""

    provider: str
    sdk: str
    note: str = ""
    """Why this is not the release tag, and what differs (empty for the release itself)."""

    def describe(self) -> str:
        return f"{PROVIDER}@{self.provider} + {SDK}@{self.sdk}"


#: Plugin versions whose release tag the reachable proxy lacks -> the code built instead.
FALLBACK_SOURCES: dict[str, ProviderSource] = {
    "4.34.2": ProviderSource(
        provider="v4.0.0-20260115033456-f47bc2d6f199",
        sdk="v4.24.0",
        note="the Go module proxy serves no release tag of the provider module, only this commit of "
        "2026-01-15 (client-go v0.33.3, pulumi v3.215.0). Its embedded schema lacks 81 resource types "
        "and 84 fields of newer Kubernetes APIs that pulumi_kubernetes 4.34.2 declares (e.g. "
        "resource.k8s.io/v1, scheduling.k8s.io Workload, JobSpec.scheduling, PodSpec.workloadRef); "
        "the resources the toolkit creates (Secret, ServiceAccount, Role, RoleBinding, batch/v1 Job) "
        "use none of them",
    ),
}


@dataclass(frozen=True)
class _Module:
    """A module version in the local module cache: its go.mod text and its source directory."""

    go_mod: str
    directory: Path


def _download(go: str, module: str, version: str) -> _Module | None:
    """Download ``module@version``; None if the proxy does not serve that version."""
    try:
        with tempfile.TemporaryDirectory(prefix="toolkit-go-download-") as outside_any_module:
            output = run([go, "mod", "download", "-json", f"{module}@{version}"], f"download {module}@{version}",
                         cwd=Path(outside_any_module), env=go_env())
    except ToolchainError as exc:
        if any(text in str(exc) for text in ("not available", "unknown revision", "invalid version")):
            return None
        raise
    info = json.loads(output)
    return _Module(go_mod=Path(info["GoMod"]).read_text(), directory=Path(info["Dir"]))


def resolve_source(version: str, log: Log) -> tuple[ProviderSource, _Module]:
    """The code to build for ``version``: the release tag if the proxy has it, else the known substitute."""
    go = go_binary()
    tag = f"v{version}"
    module = _download(go, PROVIDER, tag)
    if module is not None:
        return ProviderSource(provider=tag, sdk=tag), module
    fallback = FALLBACK_SOURCES.get(version)
    if fallback is None:
        raise ToolchainError(
            f"cannot build the kubernetes provider plugin v{version}: the Go module proxy does not serve "
            f"{PROVIDER}@{tag} and the toolkit knows no substitute for it. Install the plugin on "
            f"a machine that reaches get.pulumi.com (pulumi plugin install resource kubernetes {version}) "
            f"or install a pulumi-kubernetes version the toolkit can build ({', '.join(sorted(FALLBACK_SOURCES))})"
        )
    log(f"kubernetes provider v{version}: building {fallback.describe()} instead: {fallback.note}")
    module = _download(go, PROVIDER, fallback.provider)
    if module is None:
        raise ToolchainError(
            f"the Go module proxy serves neither {PROVIDER}@{tag} nor its substitute @{fallback.provider}; "
            "cannot build the kubernetes provider plugin here"
        )
    return fallback, module


def _embed_files(module_dir: Path, version: str, into: Path) -> None:
    """What the upstream ``go generate`` writes: the schema with the version set, and the mapping."""
    schema = json.loads((module_dir / SCHEMA_DIR / "schema.json").read_text())
    schema["version"] = version
    (into / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
    mapping = json.loads((module_dir / SCHEMA_DIR / "terraform-mapping.json").read_text())
    (into / "terraform-mapping-embed.json").write_text(json.dumps(mapping, separators=(",", ":")))


def _go_directive(go_mod: str) -> str:
    match = re.search(r"^go\s+(\S+)", go_mod, re.MULTILINE)
    return match.group(1) if match else "1.24"


def build_kubernetes_provider(version: str, work_dir: Path, out: Path, log: Log) -> ProviderSource:
    """Build ``pulumi-resource-kubernetes`` stamped ``version`` into ``out``; returns the code built."""
    go = go_binary()
    env = go_env()
    source, module = resolve_source(version, log)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "go.mod").write_text(
        "\n".join(
            [
                "module toolkit.local/pulumi-resource-kubernetes",
                "",
                f"go {_go_directive(module.go_mod)}",
                "",
                f"require (\n\t{PROVIDER} {source.provider}\n\t{SDK} {source.sdk}\n)",
                "",
                *published_replaces(module.go_mod),
                "",
            ]
        )
    )
    (work_dir / "main.go").write_text(MAIN_GO)
    _embed_files(module.directory, version, work_dir)
    log("resolving dependencies (go mod tidy)")
    run([go, "mod", "tidy"], "go mod tidy for the kubernetes provider", cwd=work_dir, env=env)
    log(f"compiling pulumi-resource-kubernetes v{version} (several minutes on a cold cache)")
    out.parent.mkdir(parents=True, exist_ok=True)
    run(
        [go, "build", "-p", "2", "-trimpath", "-ldflags", f"-s -w -X {VERSION_SYMBOL}={version}", "-o", str(out), "."],
        f"go build of pulumi-resource-kubernetes v{version}",
        cwd=work_dir,
        env=env,
    )
    reported = plugin_version(out)
    if reported != version:
        raise ToolchainError(f"the built {out} reports version {reported!r}, expected {version!r}")
    return source


def plugin_version(binary: Path) -> str:
    """The version the plugin reports to the engine (``GetPluginInfo``), asked the way the engine asks.

    Started with no arguments a provider serves on a free port and prints it.
    """
    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import provider_pb2_grpc

    process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            raise ToolchainError(f"{binary} did not start as a provider (printed {port!r} instead of its port)")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = provider_pb2_grpc.ResourceProviderStub(channel).GetPluginInfo(empty_pb2.Empty(), timeout=60)
        return str(info.version)
    finally:
        process.terminate()
        process.wait(30)


def source_note_path(binary: Path) -> Path:
    return binary.with_name(binary.name + ".source")


def write_source_note(binary: Path, source: ProviderSource) -> None:
    """Record next to the binary which code it was built from, for ``toolkit doctor``."""
    text = source.describe() + (f"\n{source.note}" if source.note else "")
    source_note_path(binary).write_text(text + "\n")


def read_source_note(binary: Path) -> str:
    """The first line of the recorded source ('' if none, e.g. a plugin installed from get.pulumi.com)."""
    path = source_note_path(binary)
    return path.read_text().splitlines()[0] if path.is_file() else ""
