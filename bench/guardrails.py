"""What guardrails cost per call: policy packs and slot counting, as ratios to the same pool without them.

    .venv/bin/python bench/guardrails.py [--repeats 5]

Three process pools on the same backend run the same trivial call, alternating
so they see the same machine load: ``plain``, ``policy`` (the example pack:
a gate preview plus the analyzer in ``up``) and ``slots`` (max_concurrent_runs).
Reported: submit->result latency (min/median/max) per pool and the medians'
ratios to ``plain``. Times are never asserted: ratios from one run are what to
compare. Saved as section ``guardrails`` (bench/report.py); ``bench/run.py
--guardrails`` includes it in a full run.
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
PACK = HERE.parent / "examples" / "policy_pack"
POOLS = {
    "plain": {},
    "policy": {"policy_packs": [str(PACK)]},
    "slots": {"max_concurrent_runs": 4},
}


def trivial() -> int:
    return 2


def measure(repeats: int) -> dict:
    """Runs in a fresh TOOLKIT_HOME (see ``run``): the three pools exist only there."""
    from toolkit import process
    from toolkit.futures import wait_for_teardowns
    from toolkit.pools.registry import PoolRegistry, WorkPool

    registry = PoolRegistry()
    for name, fields in POOLS.items():
        registry.save(WorkPool(name=f"bench-{name}", type="process", **fields), overwrite=True)
    process(pool="bench-plain")(trivial)()  # warm-up: plugin paths
    wait_for_teardowns()
    samples: dict[str, list[float]] = {name: [] for name in POOLS}
    for _ in range(repeats):
        for name in POOLS:
            bound = process(pool=f"bench-{name}")(trivial)
            started = time.perf_counter()
            assert bound() == 2
            samples[name].append(time.perf_counter() - started)
            wait_for_teardowns()
    base = statistics.median(samples["plain"])
    return {
        "repeats": repeats,
        "pools": {
            name: {"min": min(times), "median": statistics.median(times), "max": max(times),
                   "ratio_to_plain": statistics.median(times) / base}
            for name, times in samples.items()
        },
    }


def run(repeats: int) -> dict:
    """``measure`` in a fresh interpreter and TOOLKIT_HOME."""
    env = {**os.environ, "TOOLKIT_PROGRESS": "0", "TOOLKIT_HOME": tempfile.mkdtemp(prefix="toolkit-bench-guard-")}
    output = subprocess.run([sys.executable, __file__, "--measure", "--repeats", str(repeats)],
                            env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def render(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``guardrails``."""
    data = saved["data"]
    what = {
        "plain": "no guardrail",
        "policy": "the example policy pack (examples/policy_pack): a gate preview, then the analyzer in `up`",
        "slots": "`max_concurrent_runs=4`: a slot claimed and released in the backend",
    }
    lines = [
        "## Guardrails (`bench/guardrails.py`)",
        "",
        f"The same trivial `@process` call on three pools of the same backend, alternating, {data['repeats']} "
        "calls each: what a guardrail adds per call, as a ratio to the plain pool in the same run.",
        "",
        "| pool | guardrail | submit→result (min / median / max) | ratio to plain (median) |",
        "|---|---|---|---|",
    ]
    for name, figures in data["pools"].items():
        lines.append(
            f"| {name} | {what[name]} | {figures['min']:.2f} / {figures['median']:.2f} / {figures['max']:.2f} s "
            f"| {figures['ratio_to_plain']:.2f}× |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.repeats)))
        return
    from report import Run  # bench/report.py, next to this script

    print("\n".join(render(Run.begin().section("guardrails", run, args.repeats), {})))


if __name__ == "__main__":
    main()
