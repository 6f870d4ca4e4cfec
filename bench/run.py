"""Benchmarks: the toolkit's overhead as ratios against a raw baseline measured in the same run.

    .venv/bin/python bench/run.py [--repeats 5] [--targets process docker] [--no-prefect]

Per target, a trivial function is called through the toolkit and the same
trivial work is run the plain way (``python -c`` for process, ``docker run``
of the same image for docker), alternating, so both see the same machine
load. Reported: submit->result latency (min/median/max) and its ratio to the
baseline, the per-phase breakdown from ``RunFuture.timings``, the teardown
that follows the result, throughput at 1/4/10 concurrent runs, the client's
peak memory, and every Pulumi CLI and plugin process one run starts (traced
through wrappers, tests/cli_trace.py) next to the processes the same run
takes through the Automation API's own ``Stack`` methods, measured in the same
run; then the same trivial job through Prefect 3's ``@docker`` on the same
engine (bench/prefect_docker.py), the environments figures
(bench/environments.py: first-call build, per-call cost of a cached
environment), many calls through one stack (bench/map.py: ``.map`` against
``.submit()`` on docker, and a 10,000-item map's client
memory), the goals of issue 29 against the path before it measured alternating in the same run
(bench/candidates29.py), and the goals of issue 15 against the figures before it. Times
are never asserted anywhere: machines here are noisy, ratios from one run are
what to compare.
Teardown is checked, not assumed: after each throughput level every run's
``teardown_error`` is read and the leak probes of tests/leaks.py look for
stacks, run directories, staged bundles and containers left behind; each thing
found is matched by its run id against this bench run's toolkit run records and
the SDK path's runs it made (``whose_leftovers``), and the report says what was
found and whose.

Every figure is saved as JSON (bench/results/<section>.json) and bench/results.md
is rendered from those files alone (bench/report.py). Adding a section or a
figure: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.leaks and tests/cli_trace.py, when run as bench/run.py

PHASES = ("render", "bundle", "stack_up", "run", "collect", "destroy")
TRIVIAL = "print(1 + 1)"
BEFORE = {
    "date": "2026-11-24",
    "process": {"median": 1.55, "ratio": 81.5, "teardown": 1.41, "runs_per_min_10": 35},
    "docker": {"median": 1.89, "ratio": 7.4, "teardown": 0.96, "runs_per_min_10": 31},
    "prefect_ratio": 12.8,
}
"""bench/results.md before issue 15 (the engine on the Automation API's ``Stack`` methods)."""
GOALS = {"docker_ratio": 3.0, "process_median": 0.6, "teardown_median": 0.6, "throughput_factor": 2.0}
PLUGINS = ("pulumi-resource-pulumi-python", "pulumi-resource-toolkit", "pulumi-resource-docker")
BEFORE_29 = {"process": {"runs_per_min_10": 66}, "docker": {"runs_per_min_10": 45}, "date": "2026-11-26"}
"""bench/results.md before issue 29 (its throughput goal: 1.5× these)."""
GOALS_29 = {"throughput_factor": 1.5}


def _stats(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def _baseline_command(target: str) -> list[str]:
    if target == "process":
        return [sys.executable, "-c", TRIVIAL]
    from toolkit.targets.docker.models import default_image

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

    import candidates29  # bench/candidates29.py: the path before issue 29, for its same-run comparison

    trivial()  # warm-up: first import of the provider and plugin paths
    _sdk_run(trivial)  # and of the SDK path
    latency, baseline, teardown, sdk = [], [], [], []
    before_29: dict[str, list[float]] = {"latency": [], "teardown": []}
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
        sdk.append(_sdk_run(trivial))
        with candidates29.before():
            started = time.perf_counter()
            future = trivial.submit()
            assert future.result() == 2
            before_29["latency"].append(time.perf_counter() - started)
            returned = time.perf_counter()
            future.wait_teardown()
            before_29["teardown"].append(time.perf_counter() - returned)
    from tests.leaks import leftovers, session_run_ids

    throughput = {}
    for n in concurrency:
        started = time.perf_counter()
        futures = [trivial.submit() for _ in range(n)]
        assert [f.result() for f in futures] == [2] * n
        unfinished = [f.run_id for f in futures if not f.wait_teardown(600)]
        wall = time.perf_counter() - started
        teardown_errors = [f"{f.run_id}: {f.teardown_error}" for f in futures if f.teardown_error]
        toolkit_runs, sdk_runs = session_run_ids(), _sdk_run_ids()
        left = whose_leftovers(leftovers(), toolkit_runs, sdk_runs)
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
            "checked_against": {"toolkit_runs": len(toolkit_runs), "sdk_runs": len(sdk_runs)},
        }
    n = max(concurrency)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda _: _sdk_run(trivial), range(n)))
    sdk_throughput = {"n": n, "wall": time.perf_counter() - started}
    sdk_throughput["runs_per_min"] = 60 * n / sdk_throughput["wall"]
    with candidates29.before():
        started = time.perf_counter()
        futures = [trivial.submit() for _ in range(n)]
        assert [f.result() for f in futures] == [2] * n
        for future in futures:
            future.wait_teardown(600)
        before_29_throughput = {"n": n, "runs_per_min": 60 * n / (time.perf_counter() - started)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "target": target,
        "latency": _stats(latency),
        "baseline": _stats(baseline),
        "ratio": statistics.median(latency) / statistics.median(baseline),
        "teardown_after_result": _stats(teardown),
        "phases": {phase: statistics.median(values) for phase, values in phases.items()},
        "throughput": throughput,
        "sdk_path": {
            "latency": _stats([run.latency for run in sdk]),
            "teardown_after_result": _stats([run.teardown for run in sdk]),
            "throughput": sdk_throughput,
        },
        "before_29": {
            "latency": _stats(before_29["latency"]),
            "teardown_after_result": _stats(before_29["teardown"]),
            "throughput": before_29_throughput,
        },
        "peak_rss_mb": peak,
        "cli_calls": trace_target(trivial, repeats),
    }


RUN_ID = re.compile(r"(?:^|[-/])([0-9a-f]{12})(?:[-.]|$)")
"""A run id (``preparation.new_run_id``) inside a leftover's name: ``run-<id>``, ``toolkit-<id>-1``,
``<id>.tkb``, a run directory ``<id>``, a bookkeeping path ending in ``run-<id>``."""


def whose_leftovers(found: dict[str, list[str]], toolkit_runs: set[str], sdk_runs: set[str]) -> dict[str, dict]:
    """What the leak probes found, by owner: this bench run's toolkit runs (the run ids of the run
    records in its TOOLKIT_HOME), the SDK path's runs it made (``_sdk_run_ids``), or neither."""
    owners: dict[str, dict[str, list[str]]] = {"toolkit": {}, "sdk": {}, "unknown": {}}
    for kind, items in found.items():
        for item in items:
            match = RUN_ID.search(Path(item).name)
            run_id = match.group(1) if match else None
            owner = "toolkit" if run_id in toolkit_runs else "sdk" if run_id in sdk_runs else "unknown"
            owners[owner].setdefault(kind, []).append(item)
    return owners


def _sdk_runs_file() -> Path:
    """The SDK path's run ids, kept beside the run records: each target is measured in its own process."""
    from toolkit import settings

    return settings.home() / "bench-sdk-runs.txt"


def _sdk_run_ids() -> set[str]:
    path = _sdk_runs_file()
    return set(path.read_text().split()) if path.exists() else set()


# ------------------------------------------------------------------------ CLI processes per run


def _tracer():
    """Wrappers for the CLI and the plugins a run starts, and the engine pointed at them."""
    from tests.cli_trace import CliTrace, plugins_on_path
    from toolkit import settings, workspace

    real = settings.pulumi_binary()
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    search = [str(real.parent), str(settings.bin_dir()), *map(str, sorted((home / "plugins").glob("resource-*")))]
    trace = CliTrace(
        Path(tempfile.mkdtemp(prefix="toolkit-bench-trace-")),
        real.resolve(),
        plugins_on_path(list(PLUGINS), os.pathsep.join(search)),
    )
    os.environ.update(trace.env())
    workspace.pulumi_command.cache_clear()
    workspace.pulumi_command()  # `pulumi version` once, before the traced runs
    return trace


def _summarize(runs: list[list], result_times: list[float]) -> list[dict]:
    """Per process kind: calls per run, median wall and CPU seconds, and which operation started it."""
    rows: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: {"wall": [], "cpu": [], "count": []})
    for calls, result_at in zip(runs, result_times):
        counts: dict[tuple[str, str], int] = defaultdict(int)
        operations = [call for call in calls if call.name == "pulumi"]
        for call in calls:
            plugin = call.name != "pulumi"
            parent = next((op for op in operations if plugin and op.started <= call.started <= op.ended), None)
            where = "before the result" if call.started < result_at else "teardown"
            key = (call.command if parent is None else f"  {call.command} (in {parent.command})", where)
            rows[key]["wall"].append(call.seconds)
            rows[key]["cpu"].append(call.cpu)
            counts[key] += 1
        for key in rows:
            rows[key]["count"].append(counts.get(key, 0))
    return [
        {
            "process": name,
            "when": where,
            "per_run": statistics.median(values["count"]),
            "wall": statistics.median(values["wall"]),
            "cpu": statistics.median(values["cpu"]),
        }
        for (name, where), values in rows.items()
    ]


def trace_target(trivial, repeats: int) -> dict:
    """The processes of ``repeats`` toolkit runs, and of as many through the SDK's ``Stack`` methods;
    and where a toolkit run's time goes, from its engine events."""
    trace = _tracer()
    events = _event_clock()
    toolkit_runs, toolkit_results, sdk_runs, sdk_results, spans = [], [], [], [], []
    for _ in range(repeats):
        trace.clear()
        events.clear()
        submitted = time.time()
        future = trivial.submit()
        assert future.result() == 2
        toolkit_results.append(time.time())
        future.wait_teardown()
        spans.append(_spans(events, submitted, toolkit_results[-1], time.time()))
        toolkit_runs.append(trace.calls())
        trace.clear()
        sdk_results.append(_sdk_run(trivial).result_at)
        sdk_runs.append(trace.calls())
    return {
        "toolkit": _summarize(toolkit_runs, toolkit_results),
        "sdk": _summarize(sdk_runs, sdk_results),
        "spans": {name: statistics.median(run[name] for run in spans if name in run) for name in SPANS},
    }


SPANS = (
    "`pulumi up` starting: CLI, backend, passphrase key",
    "program, and the dynamic-provider plugin starting",
    "run storage created",
    "until the job resource starts (its provider starting)",
    "job resource created",
    "`pulumi up` ending: stack outputs, checkpoint, exit",
    "job, watch, result read",
    "`pulumi destroy` starting: CLI, backend, key, plugins",
    "resources deleted",
    "`pulumi destroy --remove` ending, stack files removed",
)
"""Consecutive spans of one run, from submit to torn down, that ``_spans`` measures."""


def _event_clock() -> list:
    """Every engine event of every run, with the time it arrived (through ``Progress.on_event``)."""
    from toolkit.progress import Progress

    seen: list = []
    original = Progress.on_event

    def on_event(self, event) -> None:
        seen.append((time.time(), event))
        original(self, event)

    Progress.on_event = on_event
    return seen


def _spans(events: list, submitted: float, result_at: float, torn_down: float) -> dict[str, float]:
    """``SPANS`` of one run from its events: preludes, resource steps, the end of each operation."""
    marks: dict[str, float] = {}

    def mark(name: str, at: float, last: bool = False) -> None:
        if last or name not in marks:
            marks[name] = at

    for at, event in events:
        phase = "up" if at < result_at else "destroy"
        if event.prelude_event:
            mark(f"{phase} prelude", at)
        if event.cancel_event:
            mark(f"{phase} end", at, last=True)
        step = event.resource_pre_event or event.res_outputs_event
        if not step or step.metadata.type.startswith("pulumi:"):
            continue  # the stack and provider resources
        edge = "start" if event.resource_pre_event else "done"
        if phase == "up":
            kind = "storage" if step.metadata.type.endswith(":RunStorage") else "job"
            mark(f"up {kind} {edge}", at, last=edge == "done")
        else:
            mark(f"destroy {edge}", at, last=edge == "done")  # first delete started, last one done
    order = [
        submitted,
        marks.get("up prelude"),
        marks.get("up storage start"),
        marks.get("up storage done"),
        marks.get("up job start"),
        marks.get("up job done"),
        marks.get("up end"),
        result_at,
        marks.get("destroy start"),
        marks.get("destroy done"),
        torn_down,
    ]
    if None in order:
        return {}
    return {name: order[i + 1] - order[i] for i, name in enumerate(SPANS)}


@dataclass
class SdkRun:
    latency: float
    teardown: float
    result_at: float
    """Epoch time the result was read (to place traced processes before or after it)."""


def _sdk_run(trivial) -> SdkRun:
    """The same run through the Automation API's own ``Stack`` methods, as the engine did before
    issue 15: ``create_stack`` (stack init), ``set_tag`` while ``up`` runs, ``up`` (with its
    ``stack output`` and ``stack history`` reads), the job, ``destroy`` (another history read),
    ``stack rm``. Same CLI, plugins and runner as the toolkit's runs: only the engine's calls differ."""
    import fsspec
    from pulumi import automation as auto

    from toolkit import diy_backend, engine, settings, workspace
    from toolkit.bundles import RESULT_NAME, unseal_result
    from toolkit.preparation import prepare

    started = time.perf_counter()
    prepared = prepare(trivial.fn, (), {}, trivial.pool, trivial.layers, trivial.target_type)
    work_dir = Path(tempfile.mkdtemp(prefix="toolkit-bench-sdk-"))
    name = engine.stack_name(prepared.run_id)
    stack = auto.create_stack(
        name,
        project_name=settings.RUN_PROJECT,
        program=lambda: prepared.target.program(prepared.context),
        opts=workspace.workspace_options(prepared.backend_url, work_dir),
    )
    tagger = threading.Thread(target=stack.set_tag, args=(engine.RUN_TAG, "{}"))
    tagger.start()
    outputs = {key: value.value for key, value in stack.up(on_output=lambda _line: None).outputs.items()}
    tagger.join()
    watcher = prepared.target.watcher(prepared.context, outputs)
    while not watcher.status().finished:
        time.sleep(0.01)
    context = prepared.context
    fs, root = fsspec.core.url_to_fs(context.storage_url, **context.storage_options)
    assert unseal_result(fs.cat_file(f"{root}/{RESULT_NAME}"), context.run_key, context.storage_url) == 2
    result_at, returned = time.time(), time.perf_counter()
    stack.destroy(on_output=lambda _line: None)
    workspace.remove_stack(name, prepared.backend_url, work_dir)
    torn_down = time.perf_counter()
    # `stack rm` leaves the stack's empty history and lock directories, as the engine did before it
    # removed them itself; untimed, so the leak checks after each throughput level see only this run's.
    diy_backend.remove_leftovers(prepared.backend_url, settings.RUN_PROJECT, name)
    prepared.discard_bundle()
    shutil.rmtree(work_dir, ignore_errors=True)
    with _sdk_runs_file().open("a") as known:  # whose_leftovers tells its leftovers from the toolkit's
        known.write(prepared.run_id + "\n")
    return SdkRun(returned - started, torn_down - returned, result_at)


# ------------------------------------------------------------------------ report


def _met(value: bool) -> str:
    return "**yes**" if value else "**no**"


def render_goals_29(results: list[dict]) -> list[str]:
    """Issue 29's goals, each against its baseline from this run and against the path before issue 29
    (dynamic resources, a plugin per operation, the passphrase key per CLI process) measured alternating."""
    by = {r["target"]: r for r in results}
    lines = [
        "## Goals of issue 29",
        "",
        "*Before 29, this run*: the same calls on the path before issue 29 (the run's storage and process job as "
        "dynamic resources, a plugin per `up` and `destroy`, the passphrase key derived in each CLI process; "
        "bench/candidates29.py), alternating with *now*. Throughput's goal is 1.5× the figure on record before "
        f"issue 29 ({BEFORE_29['date']}).",
        "",
        "| goal | before 29, this run | now | met |",
        "|---|---|---|---|",
    ]
    if "process" in by:
        r = by["process"]
        median = r["latency"]["median"]
        lines.append(
            f"| `@process` submit→result median ≤ {GOALS['process_median']} s "
            f"| {r['before_29']['latency']['median']:.2f} s | {median:.2f} s | {_met(median <= GOALS['process_median'])} |"
        )
    if "docker" in by:
        r = by["docker"]
        base = r["baseline"]["median"]
        lines.append(
            f"| `@docker` submit→result ≤ {GOALS['docker_ratio']:g}× a raw `docker run` of the same image "
            f"| {r['before_29']['latency']['median'] / base:.1f}× | {r['ratio']:.1f}× ({r['latency']['median']:.2f} s "
            f"vs {base:.2f} s) | {_met(r['ratio'] <= GOALS['docker_ratio'])} |"
        )
    for target, r in by.items():
        median = r["teardown_after_result"]["median"]
        lines.append(
            f"| `@{target}` teardown after the result, median ≤ {GOALS['teardown_median']} s "
            f"| {r['before_29']['teardown_after_result']['median']:.2f} s | {median:.2f} s "
            f"| {_met(median <= GOALS['teardown_median'])} |"
        )
    for target, r in by.items():
        n = r["before_29"]["throughput"]["n"]
        now = {int(k): v for k, v in r["throughput"].items()}.get(n)
        if now is None or n != 10:
            continue
        goal = GOALS_29["throughput_factor"] * BEFORE_29[target]["runs_per_min_10"]
        lines.append(
            f"| `@{target}` throughput at 10 concurrent ≥ {goal:.0f} runs/min "
            f"| {r['before_29']['throughput']['runs_per_min']:.0f} runs/min | {now['runs_per_min']:.0f} runs/min "
            f"| {_met(now['runs_per_min'] >= goal)} |"
        )
    return lines + [""]


def render_goals(results: list[dict], prefect: dict | None, prefect_source: str = "") -> list[str]:
    """Each goal against the figure before issue 15 and against the SDK path measured in this run;
    ``prefect_source``: where the Prefect figure comes from when another run measured it."""
    by = {r["target"]: r for r in results}
    lines = [
        "## Goals of issue 15",
        "",
        f"*Before*: bench/results.md of {BEFORE['date']}, the engine on the Automation API's `Stack` methods. "
        "*SDK path*: those same `Stack` calls measured in this run, on this run's CLI, plugins and runner "
        "(only the engine's CLI calls differ from *now*), so the load is the same.",
        "",
        "| goal | before | SDK path, this run | now | met |",
        "|---|---|---|---|---|",
    ]
    if "docker" in by:
        r = by["docker"]
        base = r["baseline"]["median"]
        lines.append(
            f"| `@docker` submit→result ≤ {GOALS['docker_ratio']:g}× a raw `docker run` of the same image "
            f"| {BEFORE['docker']['ratio']}× | {r['sdk_path']['latency']['median'] / base:.1f}× "
            f"| {r['ratio']:.1f}× ({r['latency']['median']:.2f} s vs {base:.2f} s) | {_met(r['ratio'] <= GOALS['docker_ratio'])} |"
        )
    if "process" in by:
        r = by["process"]
        median = r["latency"]["median"]
        lines.append(
            f"| `@process` submit→result median ≤ {GOALS['process_median']} s | {BEFORE['process']['median']} s "
            f"| {r['sdk_path']['latency']['median']:.2f} s | {median:.2f} s | {_met(median <= GOALS['process_median'])} |"
        )
    for target, r in by.items():
        median = r["teardown_after_result"]["median"]
        lines.append(
            f"| `@{target}` teardown after the result, median ≤ {GOALS['teardown_median']} s "
            f"| {BEFORE[target]['teardown']} s | {r['sdk_path']['teardown_after_result']['median']:.2f} s "
            f"| {median:.2f} s | {_met(median <= GOALS['teardown_median'])} |"
        )
    for target, r in by.items():
        now = {int(n): t for n, t in r["throughput"].items()}.get(r["sdk_path"]["throughput"]["n"])
        if now is None:
            continue
        rate, sdk_rate, n = (
            now["runs_per_min"],
            r["sdk_path"]["throughput"]["runs_per_min"],
            r["sdk_path"]["throughput"]["n"],
        )
        before = BEFORE[target]["runs_per_min_10"] if n == 10 else None  # the figure before is at 10
        lines.append(
            f"| `@{target}` throughput at {n} concurrent ≥ {GOALS['throughput_factor']:g}× before "
            f"| {f'{before} runs/min' if before else 'n/a'} | {sdk_rate:.0f} runs/min | {rate:.0f} runs/min ("
            + (f"{rate / before:.1f}× before, " if before else "")
            + f"{rate / sdk_rate:.1f}× the SDK path) "
            f"| {_met(rate >= GOALS['throughput_factor'] * before) if before else 'n/a'} |"
        )
    if prefect and prefect.get("ok"):
        lines.append(
            f"| Prefect 3 `@docker` ratio, measured again | {BEFORE['prefect_ratio']}× | | "
            f"{prefect['ratio']:.1f}×{' ' + prefect_source if prefect_source else ''} | measured |"
        )
    return lines + [""]


def render_cli_calls(results: list[dict], repeats: int) -> list[str]:
    lines = [
        "## Every CLI and plugin process of one run",
        "",
        f"Median of {repeats} traced runs per path (wrappers log each process: tests/cli_trace.py; the "
        "wrappers add a few milliseconds each, so these runs are not the latency runs above). *toolkit*: "
        "this engine. *SDK*: the same run through the Automation API's own `Stack` methods "
        "(`create_stack`, `set_tag`, `up`, `destroy`, `stack rm`), as the engine did before issue 15, "
        "measured in the same run. CPU is user + system of the process and the children it waited for "
        "(plugins are children of `pulumi up`/`destroy`, so they are in those figures too). "
        "Not listed: one `pulumi version` per client process (the shared `PulumiCommand`).",
        "",
        "| target | path | process | per run | when | wall (median) | CPU (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for path in ("toolkit", "sdk"):
            rows = sorted(r["cli_calls"][path], key=lambda row: (row["when"] != "before the result", -row["wall"]))
            for row in rows:
                name = row["process"].strip()
                nested = row["process"].startswith("  ")
                lines.append(
                    f"| {r['target']} | {path} | {'↳ ' if nested else ''}`{name}` | {row['per_run']:g} | {row['when']} "
                    f"| {row['wall']:.2f} s | {row['cpu']:.2f} s |"
                )
    return lines + [""]


def render_spans(results: list[dict], repeats: int) -> list[str]:
    lines = [
        "## Where the time of one run goes",
        "",
        f"Consecutive spans from submit to torn down, from the engine's own events (median of {repeats} "
        "traced runs). The result is returned after the seventh; the last three are the teardown.",
        "",
        "| span | " + " | ".join(r["target"] for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name in SPANS:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{r['cli_calls']['spans'].get(name, float('nan')):.2f} s" for r in results)
            + " |"
        )
    return lines + [""]


def render_latency(results: list[dict]) -> list[str]:
    lines = [
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
        'Throughput (all runs submitted at once, until every stack is destroyed). "Left behind" is checked '
        "after each level: every run's `teardown_error`, and the stacks, their history and lock directories, "
        "run directories, staged bundles and containers the leak probes of tests/leaks.py find, each matched "
        "by its run id against the run records of this bench run's toolkit runs and the SDK path's runs:",
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
    return lines + [""]


def _left_behind(level: dict) -> str:
    """What a throughput level's check found, and whose; "nothing" only when it looked and found nothing."""
    found = []
    if level["not_torn_down"]:
        found.append(f"not torn down after 600 s: {', '.join(level['not_torn_down'])}")
    found += [f"teardown error {error}" for error in level["teardown_errors"]]
    owners = {"toolkit": "of this run's toolkit runs", "sdk": "of its SDK-path runs", "unknown": "of no run of this bench"}
    for owner, kinds in level["leftovers"].items():
        found += [f"{kind} {owners[owner]}: {', '.join(items)}" for kind, items in kinds.items()]
    checked = level["checked_against"]
    looked = f"{checked['toolkit_runs']} toolkit runs' records and {checked['sdk_runs']} SDK-path runs so far"
    return "; ".join(found) + f" (checked against {looked})" if found else f"nothing (checked against {looked})"


def run_prefect(repeats: int) -> dict:
    """Prefect 3's ``@docker`` on the same engine (bench/prefect_docker.py prints one JSON document)."""
    result = subprocess.run(
        [sys.executable, str(HERE / "prefect_docker.py"), "--json", "--repeats", str(repeats)],
        capture_output=True, text=True,
    )
    return json.loads(result.stdout)


def render_prefect(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``prefect``: Prefect 3's ``@docker`` against its baseline, next to the toolkit's ``@docker``."""
    prefect = saved["data"]
    lines = ["## Prefect 3 `@docker` on the same engine, offline", ""]
    if not prefect.get("ok"):
        return lines + [f"Could not run: step {prefect.get('step')!r} failed: {prefect.get('error')}"]
    lat = prefect["prefect_latency"]
    lines += [
        f"`bench/prefect_docker.py` ({prefect['method']}), {prefect['repeats']} calls.",
        "",
        "| | submit→value (min / median / max) | baseline `docker run --rm` median | ratio (median) |",
        "|---|---|---|---|",
        f"| Prefect `@docker` | {lat['min']:.2f} / {lat['median']:.2f} / {lat['max']:.2f}s "
        f"| {prefect['baseline']['median']:.2f}s | **{prefect['ratio']:.1f}x** |",
    ]
    overview = sections.get("overview")
    docker = next((r for r in overview["data"]["targets"] if r["target"] == "docker"), None) if overview else None
    if docker:
        tk = docker["latency"]
        source = "table above" if saved["run"] == overview["run"] else f"from `{overview['command']}`, {overview['started']}"
        lines.append(
            f"| toolkit `@docker` ({source}) | {tk['min']:.2f} / {tk['median']:.2f} / {tk['max']:.2f}s "
            f"| {docker['baseline']['median']:.2f}s | **{docker['ratio']:.1f}x** |"
        )
    return lines + [
        "",
        "The two baselines run different images (Prefect's image carries Prefect), so compare the ratios.",
    ]


def measure_targets(targets: list[str], repeats: int, concurrency: list[int]) -> dict:
    """Each target in a fresh interpreter (its own peak memory), all in one fresh TOOLKIT_HOME."""
    env = {**os.environ, "TOOLKIT_PROGRESS": "0", "TOOLKIT_HOME": tempfile.mkdtemp(prefix="toolkit-bench-")}
    results = []
    for target in targets:
        print(f"benchmarking {target} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--one", target, "--repeats", str(repeats),
                   "--concurrency", *map(str, concurrency)]
        output = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    return {"repeats": repeats, "concurrency": concurrency, "targets": results}


def render(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``overview``: goals, latency, phases, throughput, spans and CLI processes per target."""
    data = saved["data"]
    results, repeats = data["targets"], data["repeats"]
    prefect = sections.get("prefect")
    same = prefect is None or prefect["run"] == saved["run"]
    prefect_source = "" if same else f"(from `{prefect['command']}`, {prefect['started']})"
    return [
        "## Overview (`bench/run.py`)",
        "",
        f"A trivial function through the toolkit vs the same work run the plain way, alternating in the same "
        f"run: {repeats} calls per target, then {', '.join(map(str, data['concurrency']))} at once.",
        "",
        *render_goals_29(results),
        *render_goals(results, prefect["data"] if prefect else None, prefect_source),
        "## Latency, phases, throughput",
        "",
        *render_latency(results),
        *render_spans(results, repeats),
        *render_cli_calls(results, repeats),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--targets", nargs="*", default=["process", "docker"],
                        help="Targets of the overview section (none: skip it).")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 10])
    parser.add_argument("--no-prefect", action="store_true", help="Skip the Prefect @docker comparison.")
    parser.add_argument("--no-environments", action="store_true", help="Skip bench/environments.py.")
    parser.add_argument(
        "--map-parts", nargs="*", default=["docker", "process"],
        help="Parts of bench/map.py to run (none: skip it); bench/on_cluster.py measures the local cluster.",
    )
    parser.add_argument("--guardrails", action="store_true", help="Also run bench/guardrails.py.")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: bench one target, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(bench_target(args.one, args.repeats, args.concurrency)))
        return
    import environments  # bench/environments.py, next to this script
    import guardrails
    import map as map_bench
    from report import Run

    run = Run.begin()
    if args.targets:
        run.section("overview", measure_targets, args.targets, args.repeats, args.concurrency)
    if not args.no_prefect:
        print("benchmarking Prefect @docker ...", file=sys.stderr, flush=True)
        run.section("prefect", run_prefect, args.repeats)
    if not args.no_environments:
        print("benchmarking environments ...", file=sys.stderr, flush=True)
        run.section("environments", environments.run, max(args.repeats, 7))
    if args.map_parts:
        run.section("map", map_bench.run, args.map_parts)
    if args.guardrails:
        print("benchmarking guardrails ...", file=sys.stderr, flush=True)
        run.section("guardrails", guardrails.run, args.repeats)
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
