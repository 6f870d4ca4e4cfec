"""A single-node Kubernetes cluster on this machine, offline: the kubernetes target's real test bed.

    python -m tests.k8s.cluster up|down|status|build      (or scripts/k8s-cluster ...)

``up`` builds what is missing (Kubernetes and etcd from the Go module proxy,
Debian's containerd/runc/CNI plugins, the pause and runner images), then starts
containerd, etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet and an S3 emulator in that order, each waited for with a probe. It
prints each step with its time; a component that does not come up stops the
start with an error naming it and quoting the end of its log, and everything
already started is stopped again. ``down`` deletes the pods (so the kubelet
releases their networks and mounts), stops the daemons it started (by the
PIDs it recorded, nothing else), and removes the cluster's state, network
bridge and cgroups; builds and imported images stay cached. Needs root.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tests.k8s import components, images
from tests.k8s import layout as L
from tests.k8s.binaries import KUBERNETES_VERSION, ensure_binaries
from tests.k8s.components import Component, Credentials, tls_context
from tests.k8s.layout import ClusterInfo, Layout

DEBIAN_PACKAGES = {"containerd": "containerd", "runc": "runc", "ctr": "containerd",
                   "/usr/lib/cni/bridge": "containernetworking-plugins"}
STOP_SECONDS = 20
Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message names the component."""


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def _step(log: Log, name: str) -> Iterator[list[str]]:
    started = time.monotonic()
    log(f"==> {name}")
    outcome: list[str] = []
    yield outcome
    log(f"    {'; '.join(outcome) or 'done'} ({time.monotonic() - started:.1f}s)")


# -- processes ----------------------------------------------------------------------------


def _recorded(where: Layout) -> dict[str, dict[str, object]]:
    return json.loads(where.pids.read_text()) if where.pids.is_file() else {}


def _alive(pid: int, executable: str) -> bool:
    """``pid`` runs ``executable`` (not a recycled PID of something else)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return Path(command).name == Path(executable).name


def _start(where: Layout, component: Component) -> subprocess.Popen[bytes]:
    where.logs.mkdir(parents=True, exist_ok=True)
    log_path = where.logs / f"{component.name.split()[0]}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(component.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, **component.env})
    records = _recorded(where)
    records[component.name] = {"pid": process.pid, "executable": component.argv[0], "log": str(log_path)}
    where.pids.write_text(json.dumps(records, indent=2) + "\n")
    return process


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(where: Layout, component: Component, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + component.timeout
    waiting = component.probe()
    while waiting is not None:
        log_path = Path(str(_recorded(where)[component.name]["log"]))
        if process.poll() is not None:
            raise ClusterError(f"{component.name} exited with code {process.returncode} while starting. "
                               f"Its log {log_path} ends:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{component.name} did not come up within {component.timeout:.0f} s ({waiting}). "
                               f"Its log {log_path} ends:\n{_tail(log_path)}")
        time.sleep(0.5)
        waiting = component.probe()


def _stop_processes(where: Layout, log: Log, names: set[str]) -> None:
    """Stop the recorded ``names``, newest first: SIGTERM, then SIGKILL after ``STOP_SECONDS``."""
    records = _recorded(where)
    for name, record in reversed(list(records.items())):
        if name not in names:
            continue
        pid, executable = int(str(record["pid"])), str(record["executable"])
        if not _alive(pid, executable):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while _alive(pid, executable) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid, executable):
            log(f"    {name} ignored SIGTERM for {STOP_SECONDS} s: killing it")
            os.kill(pid, signal.SIGKILL)
        log(f"    stopped {name} (pid {pid})")


# -- host preparation ---------------------------------------------------------------------


def _ensure_debian_packages(log: Log) -> str:
    missing = sorted({package for tool, package in DEBIAN_PACKAGES.items()
                      if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))})
    if not missing:
        return "containerd, runc, CNI plugins present"
    log(f"    apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"Debian packages {missing}: {' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return f"installed {', '.join(missing)}"


def _cgroup_hierarchies(unified: bool) -> list[Path]:
    """cgroup v1 hierarchies (one directory per mounted controller set), and the hybrid v2 one if asked."""
    root = Path("/sys/fs/cgroup")
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (unified or p.name != "unified")]


def _make_cgroup_root() -> None:
    """The kubelet refuses a ``cgroupRoot`` that does not exist in every hierarchy."""
    for hierarchy in _cgroup_hierarchies(unified=False):
        path = hierarchy / L.CGROUP_ROOT
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset starts empty: inherit the parent's
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def _remove_cgroup_root() -> list[str]:
    """Remove our (by then empty) cgroup tree, deepest first; returns what could not be removed."""
    left = []
    for hierarchy in _cgroup_hierarchies(unified=True):  # runc also mirrors v1 paths in the v2 hierarchy
        root = hierarchy / L.CGROUP_ROOT
        if not root.is_dir():
            continue
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [root]:
            try:
                directory.rmdir()
            except OSError:
                left.append(str(directory))
    return left


def _mounts_under(*roots: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
            mounts.append(target)
    return sorted(mounts, key=len, reverse=True)


# -- up / down / status -------------------------------------------------------------------


def _kubectl_json(creds: Credentials, method: str, path: str, body: dict[str, object] | None = None) -> dict:
    """One request to the API server as the admin (no kubectl binary needed)."""
    request = urllib.request.Request(
        f"https://127.0.0.1:{L.APISERVER_PORT}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10, context=tls_context(creds)) as response:
        return json.loads(response.read() or b"{}")


def _credentials(where: Layout) -> Credentials:
    pki = where.pki

    def pair(name: str) -> tuple[Path, Path]:
        return pki / f"{name}.crt", pki / f"{name}.key"

    return Credentials(
        ca=pki / "ca.crt", apiserver=pair("apiserver"), apiserver_kubelet_client=pair("apiserver-kubelet-client"),
        controller_manager_serving=pair("controller-manager-serving"), scheduler_serving=pair("scheduler-serving"),
        kubelet_serving=pair("kubelet-serving"), service_account=(pki / "service-account.key", pki / "service-account.pub"),
        admin=where.state / "admin.kubeconfig", controller_manager=where.state / "controller-manager.kubeconfig",
        scheduler=where.state / "scheduler.kubeconfig", kubelet=where.state / "kubelet.kubeconfig",
        admin_client=pair("admin"),
    )


def _storage_setup(creds: Credentials, info: ClusterInfo) -> None:
    """The bucket, and the emulator's credentials as a Secret in ``default`` for pods' ``secret_env``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=info.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=L.S3_CREDENTIALS["access-key"],
                      aws_secret_access_key=L.S3_CREDENTIALS["secret-key"])
    s3.create_bucket(Bucket=info.bucket)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": L.S3_SECRET}, "stringData": L.S3_CREDENTIALS}
    _kubectl_json(creds, "POST", "/api/v1/namespaces/default/secrets", secret)


def status(where: Layout | None = None) -> dict[str, str]:
    """Component -> 'running' / 'stopped' for the processes ``up`` recorded."""
    where = where or Layout.default()
    return {name: "running" if _alive(int(str(r["pid"])), str(r["executable"])) else "stopped"
            for name, r in _recorded(where).items()}


def is_up(where: Layout | None = None) -> bool:
    where = where or Layout.default()
    states = status(where)
    return bool(states) and all(s == "running" for s in states.values()) and where.info.is_file()


def up(log: Log = _say, where: Layout | None = None) -> ClusterInfo:
    """Start the cluster (building what is missing); returns its endpoints."""
    where = where or Layout.default()
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (containerd, kubelet, cgroups, network bridge)")
    if is_up(where):
        log(f"cluster already up; for clients: source {where.env_file}")
        return ClusterInfo.load(where.info)
    if where.pids.exists() or where.state.exists():
        log("==> cleaning up a previous cluster that was not shut down")
        down(log, where)
    started = time.monotonic()
    node_ip = L.node_ip()
    try:
        with _step(log, "host packages (Debian: containerd, runc, containernetworking-plugins)") as outcome:
            outcome.append(_ensure_debian_packages(log))
        with _step(log, f"binaries (Kubernetes {KUBERNETES_VERSION}, etcd, pause)") as outcome:
            outcome.append(str(ensure_binaries(where.cache, log)))
        with _step(log, "certificates and kubeconfigs") as outcome:
            shutil.rmtree(where.logs, ignore_errors=True)
            where.state.mkdir(parents=True, exist_ok=True)
            where.run.mkdir(parents=True, exist_ok=True)
            creds = components.write_pki(where, node_ip)
            outcome.append(str(where.pki))
        _make_cgroup_root()
        for component in (components.containerd(where), components.etcd(where)):
            with _step(log, component.name) as outcome:
                _wait_ready(where, component, _start(where, component))
        marks = where.containerd_root / "toolkit-imports.json"
        with _step(log, "images (pause, runner)") as outcome:
            outcome.append(images.import_pause(where.containerd_socket, where.bin / "pause", marks))
            runner, imported = images.import_runner(where.containerd_socket, where.cache, marks, log)
            outcome.append(imported)
        for component in (
            components.apiserver(where, creds, node_ip),
            components.controller_manager(where, creds),
            components.scheduler(where, creds),
            components.kubelet(where, creds, node_ip),
            components.s3_emulator(node_ip),
        ):
            with _step(log, component.name) as outcome:
                _wait_ready(where, component, _start(where, component))
        info = ClusterInfo(
            kubeconfig=str(creds.admin), context=L.CONTEXT, node_ip=node_ip,
            s3_endpoint=f"http://{node_ip}:{L.S3_PORT}", bucket=L.BUCKET, s3_secret=L.S3_SECRET, runner_image=runner,
        )
        with _step(log, f"storage: bucket {L.BUCKET!r}, Secret default/{L.S3_SECRET}"):
            _storage_setup(creds, info)
        info.save(where.info)
        where.env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in info.client_env().items()))
    except BaseException:
        log("==> start failed: stopping what was started (logs kept in " + str(where.logs) + ")")
        down(log, where)
        raise
    log(f"cluster up in {time.monotonic() - started:.0f} s; for clients: source {where.env_file}")
    return info


@contextmanager
def shared(where: Layout | None = None) -> Iterator[ClusterInfo]:
    """The running cluster, for a test session or a benchmark; started if needed, and stopped by the
    last user of it.

    Users hold a shared lock on ``sessions.lock`` while they use the cluster.
    ``start.lock`` (exclusive, held only while the cluster is checked, started or
    stopped) keeps a user from starting the cluster while another stops it;
    waiting for ``sessions.lock`` itself exclusively would make a second user
    wait until every other one has finished. A cluster a user started is marked;
    the user that ends last (it gets ``sessions.lock`` exclusively) takes a marked
    cluster down. One started by hand (``scripts/k8s-cluster up``) stays up.
    """
    where = where or Layout.default()
    where.cache.mkdir(parents=True, exist_ok=True)
    marker = where.state / "started-by-tests"
    with (where.cache / "sessions.lock").open("w") as lock, (where.cache / "start.lock").open("w") as start:
        with _held(start):
            if is_up(where):
                info = ClusterInfo.load(where.info)
            else:
                info = up(where=where)
                marker.touch()
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield info
        finally:
            with _held(start):
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another user still needs it; the last one out takes it down
                else:
                    if marker.exists():
                        down(where=where)


@contextmanager
def _held(lock_file: IO[str]) -> Iterator[None]:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock_file, fcntl.LOCK_UN)


def _delete_pods(where: Layout, log: Log) -> None:
    """Delete every pod and wait for the kubelet to tear them down (CNI, mounts, containers)."""
    records = _recorded(where)
    running = {n for n, r in records.items() if _alive(int(str(r["pid"])), str(r["executable"]))}
    if not {"kube-apiserver", "kubelet"} <= running:
        return
    creds = _credentials(where)
    try:
        pods = _kubectl_json(creds, "GET", "/api/v1/pods")["items"]
        for pod in pods:
            meta = pod["metadata"]
            _kubectl_json(creds, "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                          {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        deadline = time.monotonic() + 60
        while _kubectl_json(creds, "GET", "/api/v1/pods")["items"] and time.monotonic() < deadline:
            time.sleep(1)
    except OSError as exc:
        log(f"    could not delete pods through the API ({exc}); removing containers directly")


def _remove_containers(where: Layout) -> None:
    """Whatever containerd still runs after the kubelet stopped: kill and delete it."""
    if not where.containerd_socket.exists():
        return
    ctr = ["ctr", "--address", str(where.containerd_socket), "-n", images.NAMESPACE]
    tasks = subprocess.run([*ctr, "tasks", "ls", "-q"], capture_output=True, text=True).stdout.split()
    for task in tasks:
        subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True)
    for task in tasks:
        subprocess.run([*ctr, "tasks", "delete", "-f", task], capture_output=True)
    containers = subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True).stdout.split()
    if containers:
        subprocess.run([*ctr, "containers", "rm", *containers], capture_output=True)


def down(log: Log = _say, where: Layout | None = None) -> None:
    """Stop everything ``up`` started and remove the cluster's state (builds and images stay)."""
    where = where or Layout.default()
    started = time.monotonic()
    with _step(log, "pods"):
        _delete_pods(where, log)
    names = set(_recorded(where))
    with _step(log, "daemons") as outcome:
        # containerd last, after its leftover containers are gone (their shims outlive it otherwise).
        _stop_processes(where, log, names - {"containerd"})
        _remove_containers(where)
        _stop_processes(where, log, names & {"containerd"})
        where.pids.unlink(missing_ok=True)
        outcome.append(f"{len(names)} recorded")
    with _step(log, "mounts, network, cgroups, state") as outcome:
        for mount in _mounts_under(where.kubelet_root, where.run, where.containerd_root):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        subprocess.run(["ip", "link", "delete", L.BRIDGE], capture_output=True)
        shutil.rmtree(Path("/var/lib/cni/networks") / L.CNI_NETWORK, ignore_errors=True)
        left = _remove_cgroup_root()
        shutil.rmtree(where.state, ignore_errors=True)
        shutil.rmtree(where.run, ignore_errors=True)
        if left:
            outcome.append(f"cgroups still in use: {', '.join(left[:5])}")
    log(f"cluster down in {time.monotonic() - started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s-cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status", "build"))
    command = parser.parse_args(argv).command
    where = Layout.default()
    try:
        if command == "up":
            info = up(where=where)
            print(json.dumps(info.__dict__, indent=2))
        elif command == "down":
            down(where=where)
        elif command == "build":
            ensure_binaries(where.cache, _say)
        else:
            states = status(where)
            for name, state in states.items():
                print(f"{name:28} {state}")
            print("cluster is " + ("up" if is_up(where) else "down"))
            return 0 if is_up(where) else 1
    except ClusterError as exc:
        print(f"k8s-cluster {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
