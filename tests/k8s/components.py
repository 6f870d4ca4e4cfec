"""The cluster's daemons: configuration files, command lines and readiness probes.

Each ``Component`` knows how to start (argv; config files are written first)
and how to tell it is serving (a probe returning None when ready, else what it
is still waiting for). The settings keep a one-node test cluster small and
predictable: loopback-only control plane, no leader election, a bridge CNI
network without NAT (pods only talk to the node), cgroups under their own root,
eviction thresholds so low that a busy CI disk never evicts a test pod.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.k8s import layout as L
from tests.k8s.images import PAUSE_IMAGE
from tests.k8s.layout import Layout
from tests.k8s.pki import Authority, Identity

Probe = Callable[[], "str | None"]


@dataclass
class Component:
    name: str
    argv: list[str]
    probe: Probe
    timeout: float
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Credentials:
    """Paths of the certificates and kubeconfigs ``write_pki`` made."""

    ca: Path
    apiserver: tuple[Path, Path]
    apiserver_kubelet_client: tuple[Path, Path]
    controller_manager_serving: tuple[Path, Path]
    scheduler_serving: tuple[Path, Path]
    kubelet_serving: tuple[Path, Path]
    service_account: tuple[Path, Path]
    admin: Path
    controller_manager: Path
    scheduler: Path
    kubelet: Path
    admin_client: tuple[Path, Path]


def write_pki(where: Layout, node_ip: str) -> Credentials:
    ca = Authority(where.pki)
    server = f"https://127.0.0.1:{L.APISERVER_PORT}"
    kubeconfigs = {
        name: ca.kubeconfig(where.state / f"{name}.kubeconfig", L.CONTEXT, server, identity)
        for name, identity in {
            "admin": Identity("admin", "toolkit-admin", "system:masters"),
            "controller-manager": Identity("controller-manager", "system:kube-controller-manager"),
            "scheduler": Identity("scheduler", "system:kube-scheduler"),
            "kubelet": Identity("kubelet", f"system:node:{L.NODE_NAME}", "system:nodes"),
        }.items()
    }
    local = {"server_names": ("localhost",), "server_ips": ("127.0.0.1",)}
    return Credentials(
        ca=ca.cert_path,
        apiserver=ca.issue(
            "apiserver", "kube-apiserver",
            server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                          "kubernetes.default.svc.cluster.local"),
            server_ips=("127.0.0.1", L.SERVICE_IP, node_ip),
        ),
        apiserver_kubelet_client=ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
        controller_manager_serving=ca.issue("controller-manager-serving", "kube-controller-manager", **local),
        scheduler_serving=ca.issue("scheduler-serving", "kube-scheduler", **local),
        kubelet_serving=ca.issue("kubelet-serving", L.NODE_NAME, server_names=(L.NODE_NAME, "localhost"),
                                 server_ips=(node_ip, "127.0.0.1")),
        service_account=ca.signing_key_pair("service-account"),
        admin=kubeconfigs["admin"],
        controller_manager=kubeconfigs["controller-manager"],
        scheduler=kubeconfigs["scheduler"],
        kubelet=kubeconfigs["kubelet"],
        admin_client=(where.pki / "admin.crt", where.pki / "admin.key"),
    )


# -- probes ---------------------------------------------------------------------------------


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def tls_context(creds: Credentials, client: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(creds.ca))
    if client:
        context.load_cert_chain(*map(str, creds.admin_client))
    return context


def http_probe(url: str, context: ssl.SSLContext | None = None, expect: str = "ok") -> Probe:
    def probe() -> str | None:
        try:
            status, body = _get(url, context)
        except (OSError, ssl.SSLError) as exc:
            return f"GET {url}: {exc}"
        return None if status == 200 and expect in body else f"GET {url}: {status} {body.strip()[:300]}"

    return probe


def node_ready_probe(creds: Credentials) -> Probe:
    url = f"https://127.0.0.1:{L.APISERVER_PORT}/api/v1/nodes/{L.NODE_NAME}"
    context = tls_context(creds)

    def probe() -> str | None:
        try:
            status, body = _get(url, context)
        except OSError as exc:
            return f"GET {url}: {exc}"
        if status == 404:
            return f"node {L.NODE_NAME!r} has not registered yet"
        if status != 200:
            return f"GET {url}: {status} {body[:300]}"
        conditions = {c["type"]: c for c in json.loads(body).get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        if ready.get("status") == "True":
            return None
        return f"node {L.NODE_NAME!r} not Ready: {ready.get('reason')}: {ready.get('message')}"

    return probe


# -- components -----------------------------------------------------------------------------


def containerd(where: Layout) -> Component:
    config = where.state / "containerd.toml"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    config.write_text(
        f"""version = 2
root = "{where.containerd_root}"
state = "{where.run / 'containerd'}"

[grpc]
  address = "{where.containerd_socket}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_cdi = false
  # Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which some hosts (VMs, containers)
  # withhold even from root; the kubelet asks for -998 on every pod sandbox, and runc then fails.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{where.run / 'runc'}"

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{where.cni_conf}"
"""
    )
    where.cni_conf.mkdir(parents=True, exist_ok=True)
    (where.cni_conf / "10-toolkit.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0",
        "name": L.CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": L.BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": L.POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]},
            },
            {"type": "loopback"},
        ],
    }, indent=2))
    return Component(
        name="containerd",
        argv=["containerd", "--config", str(config)],
        probe=lambda: None if where.containerd_socket.exists() else f"no socket {where.containerd_socket} yet",
        timeout=30,
    )


def etcd(where: Layout) -> Component:
    client = f"http://127.0.0.1:{L.ETCD_PORT}"
    peer = f"http://127.0.0.1:{L.ETCD_PEER_PORT}"
    return Component(
        name="etcd",
        argv=[
            str(where.bin / "etcd"), "--name", "toolkit", "--data-dir", str(where.state / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"toolkit={peer}",
            "--unsafe-no-fsync",  # a throw-away test cluster: no need to wait for the disk
        ],
        probe=http_probe(f"{client}/health", expect='"health":"true"'),
        timeout=30,
    )


def apiserver(where: Layout, creds: Credentials, node_ip: str) -> Component:
    return Component(
        name="kube-apiserver",
        argv=[
            str(where.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{L.ETCD_PORT}",
            "--bind-address=127.0.0.1", f"--secure-port={L.APISERVER_PORT}", f"--advertise-address={node_ip}",
            "--endpoint-reconciler-type=none",  # it listens on loopback only: advertise no endpoint for it
            f"--tls-cert-file={creds.apiserver[0]}", f"--tls-private-key-file={creds.apiserver[1]}",
            f"--client-ca-file={creds.ca}",
            f"--service-cluster-ip-range={L.SERVICE_SUBNET}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-signing-key-file={creds.service_account[0]}",
            f"--service-account-key-file={creds.service_account[1]}",
            "--authorization-mode=Node,RBAC",
            f"--kubelet-client-certificate={creds.apiserver_kubelet_client[0]}",
            f"--kubelet-client-key={creds.apiserver_kubelet_client[1]}",
            f"--kubelet-certificate-authority={creds.ca}",
            "--kubelet-preferred-address-types=InternalIP",
        ],
        probe=http_probe(f"https://127.0.0.1:{L.APISERVER_PORT}/readyz", tls_context(creds)),
        timeout=90,
    )


def controller_manager(where: Layout, creds: Credentials) -> Component:
    return Component(
        name="kube-controller-manager",
        argv=[
            str(where.bin / "kube-controller-manager"),
            f"--kubeconfig={creds.controller_manager}",
            "--bind-address=127.0.0.1", f"--secure-port={L.CONTROLLER_MANAGER_PORT}",
            f"--tls-cert-file={creds.controller_manager_serving[0]}",
            f"--tls-private-key-file={creds.controller_manager_serving[1]}",
            f"--service-account-private-key-file={creds.service_account[0]}",
            f"--root-ca-file={creds.ca}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
        ],
        probe=http_probe(f"https://127.0.0.1:{L.CONTROLLER_MANAGER_PORT}/healthz", tls_context(creds, client=False)),
        timeout=60,
    )


def scheduler(where: Layout, creds: Credentials) -> Component:
    return Component(
        name="kube-scheduler",
        argv=[
            str(where.bin / "kube-scheduler"),
            f"--kubeconfig={creds.scheduler}",
            "--bind-address=127.0.0.1", f"--secure-port={L.SCHEDULER_PORT}",
            f"--tls-cert-file={creds.scheduler_serving[0]}",
            f"--tls-private-key-file={creds.scheduler_serving[1]}",
            "--leader-elect=false",
        ],
        probe=http_probe(f"https://127.0.0.1:{L.SCHEDULER_PORT}/healthz", tls_context(creds, client=False)),
        timeout=60,
    )


def kubelet(where: Layout, creds: Credentials, node_ip: str) -> Component:
    config = where.state / "kubelet.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": L.KUBELET_PORT,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": L.KUBELET_HEALTHZ_PORT,
        "readOnlyPort": 0,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(creds.ca)}},
        "authorization": {"mode": "AlwaysAllow"},  # only the API server holds a client certificate
        "tlsCertFile": str(creds.kubelet_serving[0]),
        "tlsPrivateKeyFile": str(creds.kubelet_serving[1]),
        "containerRuntimeEndpoint": f"unix://{where.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{L.CGROUP_ROOT}",
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
    }, sort_keys=False))
    return Component(
        name="kubelet",
        argv=[
            str(where.bin / "kubelet"), f"--config={config}", f"--kubeconfig={creds.kubelet}",
            f"--root-dir={where.kubelet_root}", f"--hostname-override={L.NODE_NAME}", f"--node-ip={node_ip}",
        ],
        probe=node_ready_probe(creds),
        timeout=120,
    )


def s3_emulator(node_ip: str) -> Component:
    """moto's S3 on the node's address: the host uploads bundles there, pods fetch them from there."""
    return Component(
        name="S3 emulator (moto)",
        argv=[sys.executable, "-m", "moto.server", "-H", node_ip, "-p", str(L.S3_PORT)],
        probe=http_probe(f"http://{node_ip}:{L.S3_PORT}/moto-api/", expect=""),
        timeout=60,
    )
