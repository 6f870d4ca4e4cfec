"""What guardrails cost per call: policy packs and slot counting, as ratios to the same pool without them.

    .venv/bin/python bench/guardrails.py [--repeats 5]

Three process pools on the same backend run the same trivial call, alternating
so they see the same machine load: ``plain``, ``policy`` (the example pack:
a gate preview plus the analyzer in ``up``) and ``slots`` (max_concurrent_runs).
Prints submit->result latency (min/median/max) per pool and the medians' ratios
to ``plain``. Times are never asserted: ratios from one run are what to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from toolkit import process
from toolkit.futures import wait_for_teardowns
from toolkit.pools import PoolRegistry, WorkPool

PACK = Path(__file__).resolve().parent.parent / "examples" / "policy_pack"
POOLS = {
    "plain": {},
    "policy": {"policy_packs": [str(PACK)]},
    "slots": {"max_concurrent_runs": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    registry = PoolRegistry()
    for name, fields in POOLS.items():
        registry.save(WorkPool(name=f"bench-{name}", type="process", **fields), overwrite=True)

    def trivial() -> int:
        return 2

    samples: dict[str, list[float]] = {name: [] for name in POOLS}
    for _ in range(args.repeats):
        for name in POOLS:
            bound = process(pool=f"bench-{name}")(trivial)
            started = time.perf_counter()
            bound()
            samples[name].append(time.perf_counter() - started)
            wait_for_teardowns()
    base = statistics.median(samples["plain"])
    report = {
        name: {"min": min(times), "median": statistics.median(times), "max": max(times),
               "ratio_to_plain": statistics.median(times) / base}
        for name, times in samples.items()
    }
    print(json.dumps(report, indent=2))
    for name in POOLS:
        registry.delete(f"bench-{name}")


if __name__ == "__main__":
    main()
