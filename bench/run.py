"""Benchmarks: the toolkit's overhead as ratios against a raw baseline measured in the same run.

    .venv/bin/python bench/run.py [--repeats 5] [--targets process docker] [--no-prefect]

Per target, a trivial function is called through the toolkit and the same
trivial work is run the plain way (``python -c`` for process, ``docker run``
of the same image for docker), alternating, so both see the same machine
load. Reported: submit->result latency (min/median/max) and its ratio to the
baseline, the per-phase breakdown from ``RunFuture.timings``, the teardown
that follows the result, throughput at 1/4/10 concurrent runs, and the
client's peak memory; then the same trivial job through Prefect 3's ``@docker``
on the same engine (bench/prefect_docker.py), and the environments figures
(bench/environments.py: first-call build, per-call cost of a cached environment). Times are never asserted
anywhere: machines here are noisy, ratios from one run are what to compare.
Teardown is checked, not assumed: after each throughput level every run's
``teardown_error`` is read and the leak probes of tests/leaks.py look for
stacks, run directories, staged bundles and containers left behind; the report
says what they found.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.leaks: the same leak probes the test suite uses
PHASES = ("render", "bundle", "stack_up", "run", "collect", "destroy")
TRIVIAL = "print(1 + 1)"


def _stats(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def _baseline_command(target: str) -> list[str]:
    if target == "process":
        return [sys.executable, "-c", TRIVIAL]
    from toolkit.infra.docker import default_image

    return ["docker", "run", "--rm", default_image(), "python3", "-c", TRIVIAL]


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def bench_target(target: str, repeats: int, concurrency: list[int]) -> dict:
    """Runs inside a fresh interpreter per target (see main) so peak memory is the target's own."""
    import toolkit

    decorator = getattr(toolkit, target)

    @decorator
    def trivial() -> int:
        print(1 + 1)
        return 2

    trivial()  # warm-up: first import of the provider and plugin paths
    latency, baseline, teardown = [], [], []
    phases: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for _ in range(repeats):
        baseline.append(_timed(_baseline_command(target)))
        started = time.perf_counter()
        future = trivial.submit()
        assert future.result() == 2
        latency.append(time.perf_counter() - started)
        returned = time.perf_counter()
        future.wait_teardown()
        teardown.append(time.perf_counter() - returned)
        for phase in PHASES:
            phases[phase].append(future.timings.get(phase, 0.0))
    from tests.leaks import leftovers

    throughput = {}
    for n in concurrency:
        started = time.perf_counter()
        futures = [trivial.submit() for _ in range(n)]
        assert [f.result() for f in futures] == [2] * n
        unfinished = [f.run_id for f in futures if not f.wait_teardown(600)]
        wall = time.perf_counter() - started
        teardown_errors = [f"{f.run_id}: {f.teardown_error}" for f in futures if f.teardown_error]
        left = leftovers()
        base_started = time.perf_counter()
        procs = [subprocess.Popen(_baseline_command(target), stdout=subprocess.DEVNULL) for _ in range(n)]
        for proc in procs:
            proc.wait()
        base_wall = time.perf_counter() - base_started
        throughput[n] = {
            "wall": wall,
            "runs_per_min": 60 * n / wall,
            "baseline_wall": base_wall,
            "not_torn_down": unfinished,
            "teardown_errors": teardown_errors,
            "leftovers": left,
        }
    return {
        "target": target,
        "latency": _stats(latency),
        "baseline": _stats(baseline),
        "ratio": statistics.median(latency) / statistics.median(baseline),
        "teardown_after_result": _stats(teardown),
        "phases": {phase: statistics.median(values) for phase, values in phases.items()},
        "throughput": throughput,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def render(results: list[dict], repeats: int) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `.venv/bin/python bench/run.py --repeats {repeats}` on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M')}.",
        "A trivial function through the toolkit vs the same work run the plain way, alternating in the same run.",
        "",
        "| target | baseline | baseline median | toolkit submit→result (min / median / max) | ratio (median) | teardown after result (median) | client peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = "`python -c`" if r["target"] == "process" else "`docker run --rm` same image"
        lat = r["latency"]
        lines.append(
            f"| {r['target']} | {base} | {r['baseline']['median']:.2f}s | {lat['min']:.2f} / {lat['median']:.2f} / {lat['max']:.2f}s "
            f"| **{r['ratio']:.1f}x** | {r['teardown_after_result']['median']:.2f}s | {r['peak_rss_mb']:.0f} MB |"
        )
    lines += ["", "Per-phase medians (seconds; destroy runs after the result is returned):", ""]
    lines += ["| target | " + " | ".join(PHASES) + " |", "|---|" + "---|" * len(PHASES)]
    for r in results:
        lines.append(f"| {r['target']} | " + " | ".join(f"{r['phases'][p]:.2f}" for p in PHASES) + " |")
    lines += [
        "",
        "Throughput (all runs submitted at once, until every stack is destroyed). \"Left behind\" is checked "
        "after each level: every run's `teardown_error`, and the stacks, run directories, staged bundles and "
        "containers the leak probes of tests/leaks.py find:",
        "",
    ]
    lines += [
        "| target | concurrent | wall | runs/min | baseline wall (same n) | left behind |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for n, t in r["throughput"].items():
            lines.append(
                f"| {r['target']} | {n} | {t['wall']:.1f}s | {t['runs_per_min']:.0f} | {t['baseline_wall']:.2f}s "
                f"| {_left_behind(t)} |"
            )
    return "\n".join(lines) + "\n"


def _left_behind(level: dict) -> str:
    """What a throughput level's check found; "nothing" only when it looked and found nothing."""
    found = []
    if level["not_torn_down"]:
        found.append(f"not torn down after 600 s: {', '.join(level['not_torn_down'])}")
    found += [f"teardown error {error}" for error in level["teardown_errors"]]
    found += [f"{kind}: {', '.join(items)}" for kind, items in level["leftovers"].items()]
    return "; ".join(found) if found else "nothing (checked)"


def run_prefect(repeats: int) -> dict:
    """Prefect 3's ``@docker`` on the same engine (bench/prefect_docker.py prints one JSON document)."""
    result = subprocess.run(
        [sys.executable, str(HERE / "prefect_docker.py"), "--repeats", str(repeats)], capture_output=True, text=True
    )
    return json.loads(result.stdout)


def render_prefect(prefect: dict, toolkit_docker: dict | None) -> str:
    lines = ["", "## Prefect 3 `@docker` on the same engine, offline", ""]
    if not prefect.get("ok"):
        return "\n".join(lines + [f"Could not run: step {prefect.get('step')!r} failed: {prefect.get('error')}", ""])
    lat = prefect["prefect_latency"]
    lines += [
        f"`bench/prefect_docker.py` ({prefect['method']}).",
        "",
        "| | submit→value (min / median / max) | baseline `docker run --rm` median | ratio (median) |",
        "|---|---|---|---|",
        f"| Prefect `@docker` | {lat['min']:.2f} / {lat['median']:.2f} / {lat['max']:.2f}s "
        f"| {prefect['baseline']['median']:.2f}s | **{prefect['ratio']:.1f}x** |",
    ]
    if toolkit_docker:
        tk = toolkit_docker["latency"]
        lines.append(
            f"| toolkit `@docker` (table above) | {tk['min']:.2f} / {tk['median']:.2f} / {tk['max']:.2f}s "
            f"| {toolkit_docker['baseline']['median']:.2f}s | **{toolkit_docker['ratio']:.1f}x** |"
        )
    lines += ["", "The two baselines run different images (Prefect's image carries Prefect), so compare the ratios.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--targets", nargs="+", default=["process", "docker"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 10])
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--no-prefect", action="store_true", help="Skip the Prefect @docker comparison.")
    parser.add_argument("--no-environments", action="store_true", help="Skip bench/environments.py.")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: bench one target, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(bench_target(args.one, args.repeats, args.concurrency)))
        return
    env = {**os.environ, "TOOLKIT_PROGRESS": "0", "TOOLKIT_HOME": tempfile.mkdtemp(prefix="toolkit-bench-")}
    results = []
    for target in args.targets:
        print(f"benchmarking {target} ...", file=sys.stderr, flush=True)
        output = subprocess.run(
            [sys.executable, __file__, "--one", target, "--repeats", str(args.repeats),
             "--concurrency", *map(str, args.concurrency)],
            env=env, check=True, capture_output=True, text=True,
        ).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    report = render(results, args.repeats)
    if not args.no_prefect:
        print("benchmarking Prefect @docker ...", file=sys.stderr, flush=True)
        docker_result = next((r for r in results if r["target"] == "docker"), None)
        report += render_prefect(run_prefect(args.repeats), docker_result)
    if not args.no_environments and "docker" in args.targets:
        import environments  # bench/environments.py, next to this script

        print("benchmarking environments ...", file=sys.stderr, flush=True)
        report += "\n" + environments.render(environments.run(max(args.repeats, 7)))
    args.out.write_text(report)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
