"""The cluster's Go programs, built from the Go module proxy and cached under ``~/.cache/toolkit/k8s``.

kube-apiserver, kube-controller-manager, kube-scheduler and kubelet come from
``k8s.io/kubernetes`` at ``KUBERNETES_VERSION``. That module cannot be built
by ``go install``: its go.mod replaces every ``k8s.io/*`` staging module with
a directory of its own repository. As for the Pulumi CLI, a wrapper module
requires ``k8s.io/kubernetes`` and replaces each staging module with its
published release (``v0.<minor>.<patch>``, the same code). etcd is built in the
same module from ``go.etcd.io/etcd/server/v3`` at the version Kubernetes itself
requires, through a two-line ``main`` calling ``etcdmain.Main``. ``pause``, the
process that holds each pod's namespaces, is ten lines of our own.

One ``go build`` compiles all six, so the shared packages compile once.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from toolkit.errors import ToolchainError
from toolkit.toolchain.pulumi_cli import go_binary, go_env
from toolkit.toolchain.steps import Log, run

KUBERNETES_VERSION = "v1.33.13"
KUBERNETES = "k8s.io/kubernetes"
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
PROGRAMS = (*KUBERNETES_COMMANDS, "etcd", "pause")

ETCD_MAIN = """\
// etcd's own command: the server module's entry point.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""

PAUSE_MAIN = """\
// pause holds a pod's namespaces: it sleeps, reaps orphaned children, and exits on SIGINT or SIGTERM.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 16)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor received := range signals {
\t\tif received != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tif pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""

_STAGING = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)


def _stamp() -> str:
    """What the cached binaries were built from; a change rebuilds them."""
    digest = hashlib.sha256(f"{KUBERNETES_VERSION}\n{ETCD_MAIN}\n{PAUSE_MAIN}".encode()).hexdigest()[:16]
    return f"{KUBERNETES_VERSION} {digest}"


def binaries_ready(bin_dir: Path) -> bool:
    stamp = bin_dir / "build.stamp"
    return stamp.is_file() and stamp.read_text().strip() == _stamp() and all((bin_dir / p).is_file() for p in PROGRAMS)


def _staging_modules(go: str) -> list[str]:
    """The ``k8s.io/*`` modules that k8s.io/kubernetes takes from its own ``staging/`` directory."""
    with tempfile.TemporaryDirectory(prefix="toolkit-go-download-") as outside_any_module:
        output = run([go, "mod", "download", "-json", f"{KUBERNETES}@{KUBERNETES_VERSION}"],
                     f"download {KUBERNETES}@{KUBERNETES_VERSION}", cwd=Path(outside_any_module), env=go_env())
    go_mod = Path(json.loads(output)["GoMod"]).read_text()
    modules = _STAGING.findall(go_mod)
    if not modules:
        raise ToolchainError(f"{KUBERNETES}@{KUBERNETES_VERSION}'s go.mod names no staging modules; cannot build it")
    return modules


def _write_module(work_dir: Path, staging: list[str]) -> None:
    # The sample-* staging modules are examples nothing imports; the proxy here does not serve them.
    published = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    replaces = [f"replace {m} => {m} {published}" for m in staging if not m.startswith("k8s.io/sample-")]
    (work_dir / "go.mod").write_text(
        "\n".join(["module toolkit.local/k8s-cluster", "", "go 1.24", "",
                   f"require {KUBERNETES} {KUBERNETES_VERSION}", "", *replaces, ""])
    )
    imports = "\n".join(f'\t_ "{KUBERNETES}/cmd/{c}"' for c in KUBERNETES_COMMANDS)
    (work_dir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    for name, text in (("etcd", ETCD_MAIN), ("pause", PAUSE_MAIN)):
        (work_dir / name).mkdir(exist_ok=True)
        (work_dir / name / "main.go").write_text(text)


def _version_ldflags() -> str:
    """What Kubernetes' own build stamps: components report it, and clients (Pulumi's provider) check it."""
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    values = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean",
              "buildDate": "1970-01-01T00:00:00Z"}
    flags = [f"-X {package}.{key}={value}" for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
             for key, value in values.items()]
    return "-s -w " + " ".join(flags)


def _compile(go: str, work_dir: Path, bin_dir: Path, log: Log) -> None:
    """``go build -v`` of all programs, logging how many packages are done once a minute."""
    packages = [*(f"{KUBERNETES}/cmd/{c}" for c in KUBERNETES_COMMANDS), "./etcd", "./pause"]
    argv = [go, "build", "-v", "-p", "2", "-trimpath", "-ldflags", _version_ldflags(), "-o", f"{bin_dir}/", *packages]
    log_path = work_dir / "build.log"
    env = {**go_env(), "CGO_ENABLED": "0"}
    started = last_report = time.monotonic()
    with log_path.open("w") as output:
        process = subprocess.Popen(argv, cwd=work_dir, env=env, stdout=output, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(2)
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                done = sum(1 for line in log_path.read_text(errors="replace").splitlines() if not line.startswith("#"))
                log(f"  compiling: {done} packages in {last_report - started:.0f} s")
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise ToolchainError(f"go build of the cluster binaries failed (exit {process.returncode}); {log_path}:\n{tail}")


def ensure_binaries(cache: Path, log: Log) -> Path:
    """The directory holding all ``PROGRAMS``, building them unless the cached build is current."""
    bin_dir = cache / "bin"
    if binaries_ready(bin_dir):
        return bin_dir
    go = go_binary()
    work_dir = cache / "build"
    work_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"building Kubernetes {KUBERNETES_VERSION}, etcd and pause from the Go module proxy into {bin_dir} "
        "(once; about 7 minutes on 2 cores with cold Go caches)")
    _write_module(work_dir, _staging_modules(go))
    log("  resolving modules (go mod tidy)")
    run([go, "mod", "tidy"], "go mod tidy for the cluster binaries", cwd=work_dir, env=go_env())
    _compile(go, work_dir, bin_dir, log)
    (bin_dir / "build.stamp").write_text(_stamp() + "\n")
    log(f"  built {', '.join(PROGRAMS)} in {time.monotonic() - started:.0f} s")
    return bin_dir

