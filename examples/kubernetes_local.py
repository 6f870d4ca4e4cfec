"""``@kubernetes`` on a real cluster on this machine: the local single-node cluster of tests/k8s.

    scripts/k8s-cluster up                       # builds once (cached), then starts in seconds
    source ~/.cache/toolkit/k8s/state/env.sh     # KUBECONFIG, and the S3 emulator's keys
    python examples/kubernetes_local.py
    scripts/k8s-cluster down

The pool is what a platform team would publish for a cluster: the runner image
(with s3fs), a namespace, object storage the pods can reach (here the S3
emulator on the node's address; on EKS a bucket and an IRSA role annotation),
and the storage keys taken from a Kubernetes Secret rather than put in the pool.
"""

import json
from pathlib import Path

from toolkit import WorkPool, kubernetes
from toolkit.pools.registry import PoolRegistry
from toolkit.targets.kubernetes.target import KubernetesTarget

CLUSTER = Path.home() / ".cache" / "toolkit" / "k8s" / "state" / "cluster.json"
POOL = "local-k8s"


def register_pool(cluster: dict) -> None:
    template = KubernetesTarget.default_template()
    defaults = {
        "image": cluster["runner_image"],
        "namespace": "default",
        "context": cluster["context"],
        "secret_env": {"AWS_ACCESS_KEY_ID": f"{cluster['s3_secret']}/access-key",
                       "AWS_SECRET_ACCESS_KEY": f"{cluster['s3_secret']}/secret-key"},
        "env": {"AWS_DEFAULT_REGION": "us-east-1"},
    }
    for variable, value in defaults.items():
        template["variables"]["properties"][variable]["default"] = value
    PoolRegistry().save(
        WorkPool(
            name=POOL, type="kubernetes", base_job_template=template,
            description="The local single-node cluster (scripts/k8s-cluster)",
            storage={"url": f"s3://{cluster['bucket']}/runs", "mode": "shared-prefix",
                     "options": {"endpoint_url": cluster["s3_endpoint"]}},
        ),
        overwrite=True,
    )


@kubernetes(pool=POOL, memory="512Mi")
def where_am_i(x: int) -> dict:
    import os
    import socket

    print("inside the pod")
    return {"pod": socket.gethostname(), "uid": os.getuid(), "squared": x * x}


if __name__ == "__main__":
    if not CLUSTER.exists():
        raise SystemExit("the local cluster is not up: run scripts/k8s-cluster up (as root) first")
    register_pool(json.loads(CLUSTER.read_text()))
    print(where_am_i(7))
