"""Where the local cluster keeps things, and the addresses it uses.

Builds and imported images persist under ``~/.cache/toolkit/k8s`` (so a warm
start builds nothing); the running cluster's state (certificates, etcd data,
kubelet directory, logs) lives under ``state/`` there and is removed by
``down``; sockets and containerd's runtime state live under ``/run/toolkit-k8s``.
Every port is on loopback except the kubelet's and the S3 emulator's, which are
on the node's address so the API server and the pods can reach them.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolkit import settings

NODE_NAME = "toolkit-node"
CONTEXT = "toolkit-local"
BUCKET = "toolkit-runs"
S3_SECRET = "toolkit-s3-credentials"
"""Kubernetes Secret (keys ``access-key``/``secret-key``) holding the emulator's credentials."""
S3_CREDENTIALS = {"access-key": "toolkit-local", "secret-key": "toolkit-local-secret"}
POD_SUBNET = "10.244.0.0/24"
SERVICE_SUBNET = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
BRIDGE = "tk8s0"
CNI_NETWORK = "toolkit-k8s"
CGROUP_ROOT = "toolkit-k8s"

ETCD_PORT = 12379
ETCD_PEER_PORT = 12380
APISERVER_PORT = 16443
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
S3_PORT = 19000


def node_ip() -> str:
    """The host's address on its default route (else its first global IPv4 address): pods reach the host there."""
    route = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True).stdout.split()
    if "src" in route:
        return route[route.index("src") + 1]
    addresses = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for line in addresses.stdout.splitlines():
        words = line.split()
        if "inet" in words and BRIDGE not in words:
            return words[words.index("inet") + 1].split("/")[0]
    raise RuntimeError("this machine has no global IPv4 address for the node (ip -4 addr show scope global)")


@dataclass(frozen=True)
class Layout:
    cache: Path
    run: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(cache=Path(os.environ.get("TOOLKIT_K8S_CACHE") or settings.cache_dir() / "k8s"),
                   run=Path("/run/toolkit-k8s"))

    @property
    def bin(self) -> Path:
        return self.cache / "bin"

    @property
    def state(self) -> Path:
        return self.cache / "state"

    @property
    def logs(self) -> Path:
        """Kept after ``down`` so a failed start can be read; cleared by the next ``up``."""
        return self.cache / "logs"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def containerd_root(self) -> Path:
        """Persistent: imported images survive ``down``, so a warm start imports nothing."""
        return self.cache / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def cni_conf(self) -> Path:
        return self.state / "cni"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig: point ``KUBECONFIG`` at it."""
        return self.state / "admin.kubeconfig"

    @property
    def pids(self) -> Path:
        return self.state / "pids.json"

    @property
    def env_file(self) -> Path:
        """``source`` it to point kubectl, the toolkit and S3 clients at the cluster and its emulator."""
        return self.state / "env.sh"

    @property
    def info(self) -> Path:
        """What ``up`` started: endpoints a client needs (see ``ClusterInfo``)."""
        return self.state / "cluster.json"


@dataclass(frozen=True)
class ClusterInfo:
    """Endpoints of a running cluster, written by ``up`` for tests and users."""

    kubeconfig: str
    context: str
    node_ip: str
    s3_endpoint: str
    bucket: str
    s3_secret: str
    runner_image: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")

    def client_env(self) -> dict[str, str]:
        """What a client on this machine needs: the kubeconfig, and the emulator's (dummy) S3 keys."""
        return {"KUBECONFIG": self.kubeconfig, "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["access-key"],
                "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["secret-key"], "AWS_DEFAULT_REGION": "us-east-1"}

    @classmethod
    def load(cls, path: Path) -> ClusterInfo:
        return cls(**json.loads(path.read_text()))
