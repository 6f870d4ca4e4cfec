"""``@kubernetes`` on the local cluster (tests/k8s), each figure against a baseline from the same run.

    .venv/bin/python bench/on_cluster.py [--repeats 5] [--items 100 1000] [--parallel 10]

- **A single call against a raw Job**: the same image running ``python3 -c`` as a
  plain Job (created, its pod polled as the toolkit polls until it ends, its log
  read; then deleted), alternating with ``@kubernetes`` calls. Where the call's time goes:
  its phases (``RunFuture.timings``) and, for both, the pod as the API showed it
  (first seen, running, finished), from a watcher polling every 0.1 s.
- **Maps**: ``items`` through ``.map`` with ``parallel`` claiming pods: to the
  last result and to torn down; the pods the run ever had and at most at once,
  counted from the API server.
- **CPU per map item, by process**: the cluster's daemons and the S3 emulator
  (each process's own CPU between two ``/proc`` snapshots), the pods (their
  cgroups' ``cpuacct.usage``, which keeps what ended pods spent), the client
  with the CLI and plugins it started (``getrusage`` of itself and its waited-for
  children). What none of them accounts for is shown as such, not spread over
  the items.

The cluster is started if needed and left as found (tests/k8s/cluster.py
``shared``). Saved as section ``kubernetes`` (bench/report.py). Times are never
asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.k8s, when run as bench/on_cluster.py
TRIVIAL = "print(1 + 1)"
GOALS = {"map_100_seconds": 20.0, "map_1000_seconds": 90.0, "single_ratio": 2.0}
PHASES = ("render", "bundle", "stack_up", "run", "collect", "destroy")
CLUSTER = {"kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kubelet", "containerd"}


def trivial(x: int) -> int:
    return x + 1


class PodTimeline:
    """Polls a namespace's pods every 0.1 s: when each was first seen, first Running and first finished
    (monotonic seconds), the most alive at once, and every name ever seen."""

    def __init__(self, core: Any, namespace: str, selector: str) -> None:
        self.seen: dict[str, dict[str, float]] = {}
        self.peak_alive = 0
        self._core, self._namespace, self._selector = core, namespace, selector
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            pods = self._core.list_namespaced_pod(self._namespace, label_selector=self._selector).items
            alive = 0
            for pod in pods:
                marks = self.seen.setdefault(pod.metadata.name, {"seen": now})
                phase = pod.status.phase
                if phase == "Running":
                    marks.setdefault("running", now)
                if phase in ("Succeeded", "Failed"):
                    marks.setdefault("finished", now)
                else:
                    alive += 1
            self.peak_alive = max(self.peak_alive, alive)
            self._stop.wait(0.1)

    def stop(self) -> PodTimeline:
        self._stop.set()
        self._thread.join()
        return self


def _toolkit_poll_sleeps() -> Iterator[float]:
    """The toolkit's watcher's schedule (``RunFuture._watch``): 10 ms, growing by a fifth up to 1 s."""
    interval = 0.01
    while True:
        yield interval
        interval = min(interval * 1.2, 1.0)


def raw_job(core: Any, batch: Any, namespace: str, image: str) -> dict[str, float]:
    """A plain Job running ``python3 -c`` in ``image``: created, polled until it ends, its log read (the
    call), then deleted with its pods (the teardown)."""
    name = f"raw-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "raw", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", TRIVIAL],
            }]}},
        },
    }
    timeline = PodTimeline(core, namespace, f"job-name={name}")
    started = time.monotonic()
    batch.create_namespaced_job(namespace, manifest)
    for sleep in _toolkit_poll_sleeps():  # its pod's end, which the API shows before the Job's own status
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        if pods and pods[0].status.phase in ("Succeeded", "Failed"):
            break
        time.sleep(sleep)
    pod = pods[0]
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace).strip() == "2", "the raw Job printed no 2"
    result = time.monotonic() - started
    batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
    for sleep in _toolkit_poll_sleeps():
        if not core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items:
            break
        time.sleep(sleep)
    torn_down = time.monotonic() - started
    return {"result": result, "torn_down": torn_down, **_pod_marks(timeline.stop(), started)}


def _pod_marks(timeline: PodTimeline, started: float) -> dict[str, float]:
    """The first pod's marks, in seconds since ``started``."""
    marks = next(iter(timeline.seen.values()), {})
    return {f"pod_{key}": value - started for key, value in marks.items()}


def toolkit_call(bound: Any, core: Any, namespace: str) -> dict[str, float]:
    """One ``@kubernetes`` call: submit to result, then to torn down; its phases and its pod's marks."""
    started = time.monotonic()
    future = bound.submit(1)
    timeline = PodTimeline(core, namespace, f"toolkit-run={future.run_id}")
    assert future.result() == 2
    result = time.monotonic() - started
    future.wait_teardown()
    torn_down = time.monotonic() - started
    phases = {f"phase_{phase}": future.timings.get(phase, 0.0) for phase in PHASES}
    return {"result": result, "torn_down": torn_down, **phases, **_pod_marks(timeline.stop(), started)}


def _medians(samples: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for sample in samples for key in sample}
    return {key: statistics.median(s[key] for s in samples if key in s) for key in sorted(keys)}


class CpuMeter:
    """CPU seconds by process group between ``start`` and ``stop`` (see the module's docstring)."""

    def __init__(self, cgroup: Path) -> None:
        self._cgroup = cgroup / "cpuacct.usage"

    def snapshot(self) -> dict[str, Any]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "machine": _busy_cpu_seconds(),
            "pods": int(self._cgroup.read_text()) / 1e9 if self._cgroup.exists() else 0.0,
            "client": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
            "processes": _process_cpu_seconds(),
        }

    @staticmethod
    def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        """Each group's CPU seconds between two snapshots. A long-lived process counts only when it is in
        both (so a pod's or the CLI's process, which ended meanwhile, is never guessed at)."""
        spent = {"the pods (cgroups)": after["pods"] - before["pods"],
                 "the client, its CLI and plugins": after["client"] - before["client"]}
        for pid, (group, seconds) in after["processes"].items():
            if group is not None and pid in before["processes"] and before["processes"][pid][0] == group:
                spent[group] = spent.get(group, 0.0) + seconds - before["processes"][pid][1]
        machine = after["machine"] - before["machine"]
        spent["not accounted for (other processes on the machine, kernel)"] = max(0.0, machine - sum(spent.values()))
        return spent


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as handle:
        ticks = [int(field) for field in handle.readline().split()[1:8]]
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds() -> dict[int, tuple[str | None, float]]:
    """Every live process: its group (a cluster daemon, the shims, the S3 emulator; None for the rest)
    and its own CPU seconds (user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str | None, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        comm, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        found[int(entry)] = (_group(comm, argv), (int(fields[11]) + int(fields[12])) / tick)
    return found


def _group(comm: str, argv: list[bytes]) -> str | None:
    if b"moto.server" in argv:
        return "S3 emulator (moto)"
    if comm.startswith("containerd-shim"):
        return "containerd shims"
    if comm in CLUSTER:
        return {"kube-controller": "kube-controller-manager"}.get(comm, comm)
    return None


def map_run(bound: Any, core: Any, namespace: str, items: int, parallel: int, meter: CpuMeter) -> dict[str, Any]:
    """``items`` through ``.map`` with ``parallel`` claiming pods."""
    before = meter.snapshot()
    started = time.monotonic()
    future = bound.map(range(items), max_parallel=parallel)
    timeline = PodTimeline(core, namespace, f"toolkit-run={future.run_id}")
    assert list(future) == [x + 1 for x in range(items)]
    results = time.monotonic() - started
    future.wait_teardown()
    torn_down = time.monotonic() - started
    timeline.stop()
    spent = CpuMeter.spent(before, meter.snapshot())
    return {
        "items": items, "parallel": parallel, "results": results, "torn_down": torn_down,
        "pods_created": len(timeline.seen), "pods_peak_alive": timeline.peak_alive,
        "cpu_per_item": {group: seconds / items for group, seconds in spent.items()},
    }


@contextmanager
def bench_namespace() -> Iterator[tuple[Any, Any, Callable[[], Any], str, str, Path]]:
    """The shared cluster, a namespace with the S3 credentials' Secret, a pool in it running this
    checkout's runner image: (core, batch, the bound function's pool, namespace, image, pods' cgroup)."""
    from kubernetes import client, config

    from tests.k8s import cluster, images
    from tests.k8s import layout as L
    from tests.k8s.conftest import save_pool
    from tests.k8s.layout import Layout

    where = Layout.default()
    with cluster.shared(where) as info:
        os.environ.update(info.client_env())
        image, _ = images.import_runner(
            where.containerd_socket, where.cache, where.containerd_root / "toolkit-imports.json", lambda _line: None
        )
        api = config.new_client_from_config(config_file=info.kubeconfig)
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        namespace = f"tk-bench-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            source = core.read_namespaced_secret(L.S3_SECRET, "default")
            core.create_namespaced_secret(namespace, {"metadata": {"name": L.S3_SECRET}, "data": source.data})
            pool = save_pool(f"bench-{namespace}", info, namespace, image=image)
            yield core, batch, pool, namespace, image, Path("/sys/fs/cgroup/cpuacct") / L.CGROUP_ROOT
        finally:
            core.delete_namespace(namespace)


def measure(repeats: int, items: list[int], parallel: int) -> dict[str, Any]:
    from toolkit import kubernetes

    with bench_namespace() as (core, batch, pool, namespace, image, cgroup):
        bound = kubernetes(pool=pool)(trivial)
        bound(0)  # warm-up: the image on the node, the plugin, the client's imports
        raw_job(core, batch, namespace, image)
        raws, calls = [], []
        for _ in range(repeats):
            raws.append(raw_job(core, batch, namespace, image))
            calls.append(toolkit_call(bound, core, namespace))
        meter = CpuMeter(cgroup)
        maps = [map_run(bound, core, namespace, n, parallel, meter) for n in items]
    return {"repeats": repeats, "raw_job": _medians(raws), "call": _medians(calls),
            "raw_job_samples": raws, "call_samples": calls, "maps": maps}


def _seconds(value: float | None) -> str:
    """A pod's mark; "not seen" when the 0.1 s watcher never saw the pod in that phase (it ran shorter)."""
    return "not seen" if value is None else f"{value:.2f} s"


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "**missed**"


def render(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``kubernetes``."""
    data = saved["data"]
    raw, call = data["raw_job"], data["call"]
    ratio = call["result"] / raw["result"]
    lines = [
        "## `@kubernetes` on the local cluster (`bench/on_cluster.py`)",
        "",
        f"A single call against a raw Job of the same image running `python3 -c` (created, its pod polled on the "
        f"toolkit's schedule until it ended, its log read), alternating, {data['repeats']} of each; medians.",
        "",
        "| | to the result | to torn down | pod first seen | pod running | pod finished |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in (("raw Job", raw), ("`@kubernetes` call", call)):
        marks = " | ".join(_seconds(row.get(f"pod_{mark}")) for mark in ("seen", "running", "finished"))
        lines.append(f"| {label} | {row['result']:.2f} s | {row['torn_down']:.2f} s | {marks} |")
    lines += [
        "",
        f"The call took **{ratio:.1f}×** the raw Job to its result (goal ≤ {GOALS['single_ratio']:.0f}×: "
        f"{_verdict(ratio, GOALS['single_ratio'])}). Its phases (median seconds): "
        + ", ".join(f"{phase} {call.get('phase_' + phase, 0):.2f}" for phase in PHASES)
        + " (destroy runs after the result is returned).",
        "",
        "| map | pods (ever / at most at once) | to the last result | to torn down | goal |",
        "|---|---|---|---|---|",
    ]
    for run in data["maps"]:
        goal = GOALS.get(f"map_{run['items']}_seconds")
        verdict = f"≤ {goal:.0f} s: {_verdict(run['results'], goal)}" if goal else "—"
        lines.append(
            f"| {run['items']} items, {run['parallel']} claiming pods | {run['pods_created']} / "
            f"{run['pods_peak_alive']} | {run['results']:.1f} s | {run['torn_down']:.1f} s | {verdict} |"
        )
    for run in data["maps"]:
        parts = sorted(run["cpu_per_item"].items(), key=lambda item: -item[1])
        lines += [
            "",
            f"CPU seconds per item of the {run['items']}-item map, by process: "
            + ", ".join(f"{name} {seconds:.3f}" for name, seconds in parts) + ".",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--items", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("TOOLKIT_PROGRESS", "0")
    from report import Run  # bench/report.py, next to this script

    print("\n".join(render(Run.begin().section("kubernetes", measure, args.repeats, args.items, args.parallel), {})))


if __name__ == "__main__":
    main()
