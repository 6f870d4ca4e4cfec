"""Environments benchmark: the first call's build, and what a cached environment adds per call.

    .venv/bin/python bench/environments.py [--repeats 7]

First call: a small package set (three tiny pure-Python wheels) on ``@docker``
with nothing cached (no index entry, no stack, no image, no downloaded wheels;
pip's own HTTP cache is left as a user would have it), submit -> result, with
the environment phase (resolve, download, build) reported separately.

Per call: the same function with that environment cached, alternating with a
call that needs no extra packages, in the same run. Reported: the environment
phase of each (what a cached environment costs: the walk of the pickled call,
the index and one Docker API request) and the submit -> result medians. Times
are never asserted anywhere. Saved as section ``environments`` (bench/report.py);
bench/run.py includes it in a full run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ["humanize==4.11.0", "six==1.16.0", "tabulate==0.9.0"]


def measure(repeats: int) -> dict:
    """Runs in a fresh TOOLKIT_HOME (see main), so nothing of the environment is indexed yet."""
    from toolkit import docker
    from toolkit.environments import resolve
    from toolkit.environments.base import docker_client

    @docker(packages=PACKAGES, auto_packages=False)
    def with_packages() -> str:
        import humanize
        import six  # noqa: F401
        import tabulate  # noqa: F401

        return humanize.intcomma(1000)

    @docker(auto_packages=False)
    def plain() -> str:
        return f"{1000:,}"

    plan = with_packages.preview().environment
    assert plan is not None
    for pin in plan.packages:  # nothing downloaded yet
        for wheel in resolve.wheelhouse().glob(f"{pin.name.replace('-', '_')}-{pin.version}-*.whl"):
            wheel.unlink()
    images = docker_client().images
    if plan.hash and images.list(name=f"toolkit-env:{plan.hash}"):
        images.remove(f"toolkit-env:{plan.hash}", force=True)
    for path in (Path(os.environ["TOOLKIT_HOME"]) / "environments" / "requests").glob("*.json"):
        path.unlink()  # the preview's resolution: the first call resolves again

    plain()  # warm-up: provider plugin paths, the base image's probe
    started = time.perf_counter()
    first = with_packages.submit()
    assert first.result() == "1,000"
    first_call = time.perf_counter() - started
    first.wait_teardown()

    cached, base = [], []
    cached_env, base_env = [], []
    for _ in range(repeats):
        for fn, latency, phase in ((plain, base, base_env), (with_packages, cached, cached_env)):
            started = time.perf_counter()
            future = fn.submit()
            assert future.result() == "1,000"
            latency.append(time.perf_counter() - started)
            phase.append(future.timings["environment"])
            future.wait_teardown()
    return {
        "packages": PACKAGES,
        "wheels": [(p.name, p.version, p.size) for p in plan.packages],
        "first_call": first_call,
        "first_call_environment": first.timings["environment"],
        "cached_latency": statistics.median(cached),
        "plain_latency": statistics.median(base),
        "cached_environment_phase": statistics.median(cached_env),
        "plain_environment_phase": statistics.median(base_env),
        "cached_environment_phase_max": max(cached_env),
        "repeats": repeats,
    }


def render(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``environments``."""
    result = saved["data"]
    size = sum(size or 0 for _name, _version, size in result["wheels"])
    overhead_ms = (result["cached_environment_phase"] - result["plain_environment_phase"]) * 1000
    return [
        "## Environments (`bench/environments.py`)",
        "",
        f"`@docker(packages={result['packages']})`: {len(result['wheels'])} pure-Python wheels, "
        f"{size / 1000:.0f} kB, on a cold start (no index entry, stack, image or downloaded wheel; pip's HTTP "
        f"cache as a user has it). Medians of {result['repeats']} alternating calls in the same run "
        "(other work on the machine inflates every absolute time alike; compare within the table).",
        "",
        "| | submit→result | environment phase |",
        "|---|---|---|",
        f"| first call (resolve, download, build the image through Pulumi) | {result['first_call']:.2f}s "
        f"| {result['first_call_environment']:.2f}s |",
        f"| later calls, environment cached | {result['cached_latency']:.2f}s "
        f"| {result['cached_environment_phase'] * 1000:.1f} ms (max {result['cached_environment_phase_max'] * 1000:.1f} ms) |",
        f"| same function shape, no extra packages | {result['plain_latency']:.2f}s "
        f"| {result['plain_environment_phase'] * 1000:.1f} ms |",
        "",
        f"Per-call cost of a cached environment over none: **{overhead_ms:.1f} ms** in the environment phase "
        f"(goal ≤ 50 ms); submit→result differs by {(result['cached_latency'] - result['plain_latency']) * 1000:+.0f} ms "
        "end to end, within the run-to-run noise of the Pulumi engine.",
    ]


def run(repeats: int) -> dict:
    """``measure`` in a fresh interpreter and TOOLKIT_HOME."""
    env = {**os.environ, "TOOLKIT_PROGRESS": "0", "TOOLKIT_HOME": tempfile.mkdtemp(prefix="toolkit-bench-env-")}
    try:
        output = subprocess.run(
            [sys.executable, __file__, "--measure", "--repeats", str(repeats)],
            env=env, check=True, capture_output=True, text=True,
        ).stdout
        return json.loads(output.strip().splitlines()[-1])
    finally:
        subprocess.run([sys.executable, "-m", "toolkit", "env", "prune"], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.repeats)))
        return
    from report import Run  # bench/report.py, next to this script

    print("\n".join(render(Run.begin().section("environments", run, args.repeats), {})))


if __name__ == "__main__":
    main()
