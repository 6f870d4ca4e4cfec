"""``fn.map`` benchmark: many calls through one stack, each figure against its baseline in the same run.

    .venv/bin/python bench/map.py [--parts docker process]

- docker: 100 trivial items through ``@docker`` ``.map`` (workers: one per CPU)
  vs the same 100 calls as ``.submit()``, 10 in flight at a time (issue 16's goal:
  the map in ≤ 10 s wall on this 2-core machine);
- process: the client's peak RSS through a 10,000-item ``@process`` ``.map``,
  each result read as the iteration reaches it, vs a client process making one
  ``.submit()`` call (goal: ≤ 300 MB).

Each part runs in a fresh interpreter and TOOLKIT_HOME, so a peak RSS is that
client's own. Times are never asserted anywhere. Saved as section ``map``
(bench/report.py); bench/run.py includes it in a full run. Kubernetes maps are
measured by bench/on_cluster.py, with the cluster's own baselines.
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
from concurrent.futures import ThreadPoolExecutor

GOALS = {"docker_seconds": 10.0, "process_rss_mb": 300.0}
ITEMS = {"docker": 100, "process": 10_000}


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
    result = saved["data"]
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
    if "process" in result:
        p, b = result["process"], result["process-baseline"]
        lines.append(
            f"| `@process` 10,000 tiny items ({p['workers']} workers), client peak RSS | {p['rss_mb']:.0f} MB "
            f"({p['seconds']:.1f} s) | one `.submit()` call: {b['rss_mb']:.0f} MB "
            f"| ≤ {GOALS['process_rss_mb']:.0f} MB: {_verdict(p['rss_mb'], GOALS['process_rss_mb'])} |"
        )
    lines += [
        "",
        "Items stream: the client pickles and seals them a few at a time into signed files, and results go "
        "through a spool on disk, read when the iteration reaches them.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["docker", "process"], choices=list(ITEMS))
    parser.add_argument("--measure", choices=list(MEASURES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASURES[args.measure]()))
        return
    from report import Run  # bench/report.py, next to this script

    print("\n".join(render(Run.begin().section("map", run, args.parts), {})))


if __name__ == "__main__":
    main()
