"""``fn.map`` benchmark: many calls through one stack, each figure against its baseline in the same run.

    .venv/bin/python bench/map.py [--parts docker kubernetes process]

- docker: 100 trivial items through ``@docker`` ``.map`` (workers: one per CPU)
  vs the same 100 calls as ``.submit()``, 10 in flight at a time (issue 16's goal:
  the map in ≤ 10 s wall on this 2-core machine);
- kubernetes: 100 items through ``@kubernetes`` ``.map`` on the local cluster
  (tests/k8s; started if needed, and stopped after if this run started it), 10
  pods at once, vs 10 single ``.submit()`` calls in the same run (goal: the map in ≤ 60 s);
- process: the client's peak RSS through a 10,000-item ``@process`` ``.map``,
  each result read as the iteration reaches it, vs a client process making one
  ``.submit()`` call (goal: ≤ 300 MB).

Each part runs in a fresh interpreter and TOOLKIT_HOME, so a peak RSS is that
client's own. Times are never asserted anywhere. Saved as section ``map``
(bench/report.py); bench/run.py includes it in a full run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.k8s, when run as bench/map.py
GOALS = {"docker_seconds": 10.0, "kubernetes_seconds": 60.0, "process_rss_mb": 300.0}
ITEMS = {"docker": 100, "kubernetes": 100, "process": 10_000}


def trivial(x: int) -> int:
    return x + 1


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _map_seconds(bound, items: int, **options) -> dict:  # noqa: ANN001 - an InfraFunction
    """Submit -> last result of a map, and until its stack is gone."""
    started = time.perf_counter()
    future = bound.map(range(items), **options)
    assert list(future) == [x + 1 for x in range(items)]
    results = time.perf_counter() - started
    future.wait_teardown()
    return {"results": results, "torn_down": time.perf_counter() - started, "parallelism": options.get("max_parallel")}


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as handle:
        ticks = [int(field) for field in handle.readline().split()[1:8]]
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every live process: its pid, a name for its component, and its own CPU seconds (user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [arg.decode(errors="replace") for arg in handle.read().split(b"\0")]
        except OSError:  # gone meanwhile
            continue
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        name = "the client" if int(entry) == os.getpid() else _component(comm, argv)
        found[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


REST = "pods, shims, runc, the CLI and the rest"


def _component(comm: str, argv: list[str]) -> str:
    """The part of the local cluster (or of this machine) a process belongs to."""
    if "moto.server" in argv:
        return "S3 emulator (moto)"
    if comm.startswith("containerd-shim"):
        return "containerd shims"
    if comm in {"kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kubelet", "containerd"}:
        return {"kube-controller": "kube-controller-manager"}.get(comm, comm)
    if comm == "dockerd" or not argv[0]:  # the Docker engine (idle here), kernel threads
        return "other"
    return REST


def _cpu_by_component(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], total: float) -> dict:
    """CPU seconds each component spent between two snapshots; what ended meanwhile (pods' processes,
    runc, the CLI and its plugins) is in neither snapshot, so it is the machine's total minus the rest."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        start = before[pid][1] if pid in before and before[pid][0] == name else 0.0
        spent[name] = spent.get(name, 0.0) + seconds - start
    spent[REST] = total - sum(value for name, value in spent.items() if name != REST)
    return spent


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


RUNNER_START = """
import json, sys, time
def cpu(): return time.process_time()
marks = {}
start = cpu(); import toolkit.runner, fsspec; marks["runner_imports"] = cpu() - start
start = cpu(); fs, root = fsspec.core.url_to_fs(sys.argv[1], client_kwargs={"endpoint_url": sys.argv[2]})
marks["s3fs_import"] = cpu() - start
bucket = root.split("/")[0]
start = cpu(); fs.ls(bucket, refresh=True); marks["s3_client"] = cpu() - start
start = cpu()
for _ in range(4): fs.ls(bucket, refresh=True)
marks["s3_request"] = (cpu() - start) / 4
print(json.dumps(marks))
"""


def _runner_start_in_container(image: str, bucket_url: str, endpoint: str, env: dict[str, str]) -> dict:
    """CPU seconds of what the runner does before and around its S3 requests, in the image the
    pods run (a container on this machine's Docker engine, against the cluster's S3 emulator)."""
    credentials = [f"--env={name}={env[name]}" for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")]
    runs = []
    for _ in range(3):
        output = subprocess.run(
            ["docker", "run", "--rm", *credentials, "--entrypoint", "python", image, "-c", RUNNER_START,
             bucket_url, endpoint],
            check=True, capture_output=True, text=True,
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    return {key: sorted(run[key] for run in runs)[1] for key in runs[0]}


def _submits_seconds(bound, calls: int, in_flight: int) -> float:  # noqa: ANN001
    """``calls`` single calls, ``in_flight`` at a time, each until its stack is gone."""

    def one(x: int) -> None:
        future = bound.submit(x)
        assert future.result() == x + 1
        future.wait_teardown()

    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(calls)))
    return time.perf_counter() - started


def measure_docker() -> dict:
    from toolkit import docker

    bound = docker(trivial)
    bound(0)  # warm-up: plugin paths, the image probe
    mapped = _map_seconds(bound, ITEMS["docker"])
    submits = _submits_seconds(bound, ITEMS["docker"], 10)
    return {"map": mapped, "submits": submits, "workers": os.cpu_count()}


def measure_kubernetes() -> dict:
    from kubernetes import client, config

    from tests.k8s import cluster, images
    from tests.k8s import layout as L
    from tests.k8s.conftest import save_pool
    from tests.k8s.layout import Layout
    from toolkit import kubernetes

    where = Layout.default()
    with cluster.shared(where) as info:
        os.environ.update(info.client_env())
        image, _ = images.import_runner(
            where.containerd_socket, where.cache, where.containerd_root / "toolkit-imports.json", lambda _line: None
        )
        core = client.CoreV1Api(config.new_client_from_config(config_file=info.kubeconfig))
        namespace = f"tk-bench-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            source = core.read_namespaced_secret(L.S3_SECRET, "default")
            core.create_namespaced_secret(namespace, {"metadata": {"name": L.S3_SECRET}, "data": source.data})
            bound = kubernetes(pool=save_pool(f"bench-{namespace}", info, namespace, image=image))(trivial)
            bound(0)  # warm-up: the image on the node, the plugin
            node, client_cpu, processes = _busy_cpu_seconds(), _own_cpu_seconds(), _process_cpu_seconds()
            mapped = _map_seconds(bound, ITEMS["kubernetes"], max_parallel=10)
            node, client_cpu = _busy_cpu_seconds() - node, _own_cpu_seconds() - client_cpu
            components = _cpu_by_component(processes, _process_cpu_seconds(), node)
            submits = _submits_seconds(bound, 10, 10)
        finally:
            core.delete_namespace(namespace)
        runner = _runner_start_in_container(image, f"s3://{info.bucket}/", info.s3_endpoint, info.client_env())
    per_item = ITEMS["kubernetes"]
    return {
        "map": mapped, "submits": submits, "submit_calls": 10,
        "cpu_per_item": {"node": node / per_item, "client": client_cpu / per_item, **runner},
        "components_per_item": {name: seconds / per_item for name, seconds in components.items()},
    }


def measure_process() -> dict:
    from toolkit import process

    bound = process(trivial)
    started = time.perf_counter()
    future = bound.map(range(ITEMS["process"]))
    total = 0
    for value in future:  # each result read when reached, none kept
        total += value
    assert total == sum(x + 1 for x in range(ITEMS["process"]))
    results = time.perf_counter() - started
    future.wait_teardown()
    return {"seconds": results, "rss_mb": _peak_rss_mb(), "workers": os.cpu_count()}


def measure_process_baseline() -> dict:
    from toolkit import process

    future = process(trivial).submit(1)
    assert future.result() == 2
    future.wait_teardown()
    return {"rss_mb": _peak_rss_mb()}


MEASURES = {
    "docker": measure_docker,
    "kubernetes": measure_kubernetes,
    "process": measure_process,
    "process-baseline": measure_process_baseline,
}


def _fresh(part: str) -> dict:
    """``part`` measured in a fresh interpreter and TOOLKIT_HOME."""
    env = {**os.environ, "TOOLKIT_PROGRESS": "0", "TOOLKIT_HOME": tempfile.mkdtemp(prefix="toolkit-bench-map-")}
    output = subprocess.run(
        [sys.executable, __file__, "--measure", part], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def run(parts: list[str]) -> dict:
    results: dict = {}
    for part in parts:
        print(f"benchmarking map on {part} ...", file=sys.stderr, flush=True)
        results[part] = _fresh(part)
        if part == "process":
            results["process-baseline"] = _fresh("process-baseline")
    return results


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "**missed**"


def render(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``map``."""
    result, cores = saved["data"], saved["host"]["cores"]
    lines = [
        "## Many calls, one stack (`bench/map.py`)",
        "",
        "Each part in a fresh client process, the baseline in the same run.",
        "",
        "| | map | baseline in the same run | goal |",
        "|---|---|---|---|",
    ]
    if "docker" in result:
        d = result["docker"]
        lines.append(
            f"| `@docker` 100 trivial items ({d['workers']} worker containers) | {d['map']['results']:.1f} s to the last "
            f"result, {d['map']['torn_down']:.1f} s with teardown | 100 `.submit()` calls, 10 in flight: "
            f"{d['submits']:.1f} s ({d['submits'] / d['map']['torn_down']:.0f}× the map) "
            f"| ≤ {GOALS['docker_seconds']:.0f} s: {_verdict(d['map']['torn_down'], GOALS['docker_seconds'])} |"
        )
    if "kubernetes" in result:
        k = result["kubernetes"]
        per_call = k["submits"] / k["submit_calls"]
        lines.append(
            f"| `@kubernetes` 100 items, 10 pods at once, local cluster | {k['map']['results']:.1f} s to the last "
            f"result, {k['map']['torn_down']:.1f} s with teardown | {k['submit_calls']} `.submit()` calls, all in flight: "
            f"{k['submits']:.1f} s ({per_call:.1f} s per call) "
            f"| ≤ {GOALS['kubernetes_seconds']:.0f} s: {_verdict(k['map']['torn_down'], GOALS['kubernetes_seconds'])} |"
        )
    extra: list[str] = []
    if "kubernetes" in result and "cpu_per_item" in result["kubernetes"]:
        c = result["kubernetes"]["cpu_per_item"]
        runner = c["runner_imports"] + c["s3fs_import"] + c["s3_client"] + 6 * c["s3_request"]
        breakdown = (
            f"Where a `@kubernetes` item's time goes: the map kept the node's {cores} cores busy, "
            f"**{c['node']:.2f} CPU-s per item** from submit to torn down (the cluster, containerd, the pods, the "
            f"client and the S3 emulator, all on this machine); the client's own share {c['client']:.2f} CPU-s. "
            f"The runner in each pod, measured in the same image against the same S3 emulator: {runner:.2f} CPU-s, "
            f"of which importing s3fs {c['s3fs_import']:.2f}, its S3 client's set-up {c['s3_client']:.2f}, the "
            f"runner and fsspec {c['runner_imports']:.2f}, each of its 6 requests (HEAD and GET of the bundle and of the item, PUT of its start and result) {c['s3_request']:.3f}. "
            f"CPU-bound: at 100 items the floor is {c['node'] * 100 / cores:.0f} s on these cores, "
            f"and 60 s needs at most {60 * cores / 100:.1f} CPU-s per item (one pod per item, as "
            "the Indexed Job's form asks)."
        )
        extra += ["", breakdown]
    if "kubernetes" in result and "components_per_item" in result["kubernetes"]:
        parts = sorted(result["kubernetes"]["components_per_item"].items(), key=lambda item: -item[1])
        extra += [
            "",
            "The same map's CPU per item by component (each process's CPU between a snapshot of `/proc` before "
            "the map and one after; what started and ended in between, the pods' processes among it, is the "
            "machine's total minus the rest): " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in parts) + ".",
        ]
    if "process" in result:
        p, b = result["process"], result["process-baseline"]
        lines.append(
            f"| `@process` 10,000 tiny items ({p['workers']} workers), client peak RSS | {p['rss_mb']:.0f} MB "
            f"({p['seconds']:.1f} s) | one `.submit()` call: {b['rss_mb']:.0f} MB "
            f"| ≤ {GOALS['process_rss_mb']:.0f} MB: {_verdict(p['rss_mb'], GOALS['process_rss_mb'])} |"
        )
    lines += extra
    lines += [
        "",
        "Items stream: the client pickles and seals them a few at a time into signed files, and results go "
        "through a spool on disk, read when the iteration reaches them.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["docker", "kubernetes", "process"], choices=list(ITEMS))
    parser.add_argument("--measure", choices=list(MEASURES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASURES[args.measure]()))
        return
    from report import Run  # bench/report.py, next to this script

    print("\n".join(render(Run.begin().section("map", run, args.parts), {})))


if __name__ == "__main__":
    main()
