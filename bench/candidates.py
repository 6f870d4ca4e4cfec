"""Latency candidates of issues 15 and 29, kept or not, each measured against its alternative in the same run.

    .venv/bin/python bench/candidates.py [--issue 29] [--part engine] [--repeats 8] [--upstream-cli PATH]

Issue 29's candidates are in bench/candidates29.py, the engine started ahead and
the kept key measured again in bench/standby29.py (``--part engine``); issue 15's follow. Each
issue's candidates are saved as their own section of bench/results.md
(``candidates15``, ``candidates29``; bench/report.py). Each candidate is
measured alternating with what it replaces, so both see the same load:

* CLI start: ``pulumi version`` of the toolkit's CLI build (zxcvbn word lists
  loaded on first use) against the same CLI built as upstream does, if that
  binary is given (``--upstream-cli``); package init from ``GODEBUG=inittrace=1``.
* dynamic-provider plugin: the toolkit's lean entry point against
  ``python -m pulumi.dynamic``: start to port, interrupt to exit, CPU.
* warm attached docker provider (``PULUMI_DEBUG_PROVIDERS=docker:PORT``)
  against the engine starting its own, on ``@docker`` runs.
* warm attached dynamic provider (``pulumi-python:PORT``): whether the engine
  accepts one at all.
* checkpoints off (``PULUMI_SKIP_CHECKPOINTS``) against on, on ``@process`` runs.
* Go's garbage collector off (``GOGC=off``, ``GOMEMLIMIT``) for the CLI and its
  plugins, on ``@process`` runs: latency and the CPU of the run's CLI processes.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_start(binary: Path, repeats: int) -> dict:
    """Wall, CPU and package-init milliseconds (all, and zxcvbn's) of ``pulumi version``."""
    wall, cpu, init, zxcvbn = [], [], [], []
    for _ in range(repeats):
        before = _children_cpu()
        started = time.perf_counter()
        trace = subprocess.run([str(binary), "version"], env={**os.environ, "GODEBUG": "inittrace=1"},
                               capture_output=True, text=True, check=True).stderr
        wall.append(time.perf_counter() - started)
        cpu.append(_children_cpu() - before)
        lines = [line.split() for line in trace.splitlines() if line.startswith("init ")]
        init.append(sum(float(words[4]) for words in lines))
        zxcvbn.append(sum(float(words[4]) for words in lines if "zxcvbn" in words[1]))
    return {"wall": _median(wall), "cpu": _median(cpu), "init_ms": _median(init), "zxcvbn_init_ms": _median(zxcvbn)}


def plugin_start(command: list[str], repeats: int) -> dict:
    """Start to printed port, interrupt to exit, and CPU of one plugin process."""
    ready, gone, cpu = [], [], []
    env = {**os.environ, "PULUMI_PYTHON_CMD": sys.executable}
    for _ in range(repeats):
        before = _children_cpu()
        started = time.perf_counter()
        plugin = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                  start_new_session=True)
        int(plugin.stdout.readline())
        ready.append(time.perf_counter() - started)
        interrupted = time.perf_counter()
        os.killpg(plugin.pid, signal.SIGINT)  # as the engine does when it is done with a plugin
        plugin.wait(timeout=30)
        gone.append(time.perf_counter() - interrupted)
        cpu.append(_children_cpu() - before)
    return {"ready": _median(ready), "exit": _median(gone), "cpu": _median(cpu)}


@contextmanager
def attached(name: str, command: list[str]) -> Iterator[None]:
    """A provider started once, which the engine attaches to instead of starting its own."""
    provider = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, "PULUMI_PYTHON_CMD": sys.executable},
                                start_new_session=True)
    os.environ["PULUMI_DEBUG_PROVIDERS"] = f"{name}:{int(provider.stdout.readline())}"
    try:
        yield
    finally:
        del os.environ["PULUMI_DEBUG_PROVIDERS"]
        os.killpg(provider.pid, signal.SIGKILL)
        provider.wait()


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """``values`` in this client's environment, which every CLI process (and its plugins) inherits."""
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            del os.environ[name]


def runs(function: Any, variant: Callable[[], object], repeats: int) -> dict:
    """Submit→result, teardown and CPU medians of ``function`` with and without ``variant`` active,
    alternating. CPU: of the CLI processes the run started and the plugins they waited for."""
    samples: dict[str, dict[str, list[float]]] = {kind: {"latency": [], "teardown": [], "cpu": []}
                                                  for kind in ("with", "without")}
    for _ in range(repeats):
        for kind in ("without", "with"):
            with variant() if kind == "with" else _nothing():
                cpu = _children_cpu()
                started = time.perf_counter()
                future = function.submit()
                assert future.result(timeout=300) == 2
                returned = time.perf_counter()
                future.wait_teardown()
                samples[kind]["latency"].append(returned - started)
                samples[kind]["teardown"].append(time.perf_counter() - returned)
                samples[kind]["cpu"].append(_children_cpu() - cpu)
    return {kind: {key: _median(values) for key, values in measured.items()} for kind, measured in samples.items()}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def measure(repeats: int, upstream_cli: Path | None) -> dict:
    import toolkit
    from toolkit import settings
    from toolkit.toolchain.shim import install_shim

    results: dict = {"repeats": repeats}
    cli = settings.pulumi_binary()
    results["cli_start"] = {"toolkit build": cli_start(cli, repeats)}
    if upstream_cli:
        results["cli_start"]["upstream build"] = cli_start(upstream_cli, repeats)

    shim, _ = install_shim(Path(tempfile.mkdtemp(prefix="toolkit-candidates-")))
    results["plugin"] = {"lean entry point": plugin_start([str(shim)], repeats),
                         "python -m pulumi.dynamic": plugin_start([sys.executable, "-u", "-m", "pulumi.dynamic"], repeats)}

    @toolkit.docker
    def in_docker() -> int:
        return 2

    @toolkit.process
    def in_process() -> int:
        return 2

    in_docker(), in_process()  # warm-up
    docker_plugin = glob.glob(str(Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
                                  / "plugins" / "resource-docker-v*" / "pulumi-resource-docker"))
    if docker_plugin:
        results["attached docker provider"] = runs(in_docker, lambda: attached("docker", [docker_plugin[0]]), repeats)
    with attached("pulumi-python", [str(shim)]):
        try:
            in_process.submit().result(timeout=300)
            results["attached dynamic provider"] = "accepted"
        except Exception as exc:  # noqa: BLE001 - the error is the finding
            results["attached dynamic provider"] = re.sub(r"run \w+", "run", str(exc))
    results["checkpoints off"] = runs(in_process, lambda: environment(PULUMI_SKIP_CHECKPOINTS="true"), repeats)
    results["go gc off"] = runs(in_process, lambda: environment(GOGC="off", GOMEMLIMIT="512MiB"), repeats)
    return results


def render_15(saved: dict, sections: dict[str, dict]) -> list[str]:
    """Section ``candidates15``."""
    results = saved["data"]
    lines = [
        "## Tried for issue 15: what was kept, what was not",
        "",
        f"Medians of {results['repeats']} runs; each candidate alternates with what it replaces.",
        "",
        "| candidate | measured | kept? |",
        "|---|---|---|",
    ]
    start = results["cli_start"]
    ours = start["toolkit build"]
    upstream = start.get("upstream build")
    figure = (f"`pulumi version`: {ours['wall']:.2f} s wall, {ours['cpu']:.2f} s CPU, package init {ours['init_ms']:.0f} ms "
              f"(zxcvbn {ours['zxcvbn_init_ms']:.0f} ms)")
    if upstream:
        figure += (f"; upstream build: {upstream['wall']:.2f} s wall, {upstream['cpu']:.2f} s CPU, package init "
                   f"{upstream['init_ms']:.0f} ms (zxcvbn {upstream['zxcvbn_init_ms']:.0f} ms)")
    lines.append(f"| CLI built with zxcvbn's word lists loaded on first use (toolkit/toolchain/lazy_init.py); every "
                 f"CLI process paid for them | {figure} | yes |")
    lean, sdk = results["plugin"]["lean entry point"], results["plugin"]["python -m pulumi.dynamic"]
    lines.append(f"| lean dynamic-provider plugin: `pulumi.automation` deferred, toolkit providers in light modules, "
                 f"exit at the engine's interrupt | start {lean['ready']:.2f} s, exit {lean['exit'] * 1000:.0f} ms, "
                 f"CPU {lean['cpu']:.2f} s; SDK's: start {sdk['ready']:.2f} s, exit {sdk['exit'] * 1000:.0f} ms, "
                 f"CPU {sdk['cpu']:.2f} s | yes |")
    docker = results.get("attached docker provider")
    if docker:
        lines.append(
            f"| warm docker provider attached through `PULUMI_DEBUG_PROVIDERS` | `@docker` submit→result "
            f"{docker['with']['latency']:.2f} s vs {docker['without']['latency']:.2f} s, teardown "
            f"{docker['with']['teardown']:.2f} s vs {docker['without']['teardown']:.2f} s | no: one provider process "
            "would serve every run's `Configure` concurrently (the bridge keeps one configuration per process), "
            "the provider's environment would be frozen at its start, and a debugging hook would be on every run's "
            "path; the gain does not pay for that |")
    lines.append(f"| warm dynamic provider attached as `pulumi-python:PORT` | the engine: "
                 f"{str(results['attached dynamic provider'])[:160]!r} | no: the engine supports it only for the "
                 "plugin it starts itself |")
    skip = results["checkpoints off"]
    lines.append(f"| checkpoints off (`PULUMI_SKIP_CHECKPOINTS`) | `@process` submit→result {skip['with']['latency']:.2f} s "
                 f"vs {skip['without']['latency']:.2f} s, teardown {skip['with']['teardown']:.2f} s vs "
                 f"{skip['without']['teardown']:.2f} s | no: a client killed mid-update would leave a container or "
                 "process its stack does not record, which `toolkit gc` could not find |")
    gc = results["go gc off"]
    lines.append(f"| Go's garbage collector off for the CLI and the provider plugins it starts (`GOGC=off "
                 f"GOMEMLIMIT=512MiB`) | `@process` submit→result {gc['with']['latency']:.2f} s vs "
                 f"{gc['without']['latency']:.2f} s, teardown {gc['with']['teardown']:.2f} s vs "
                 f"{gc['without']['teardown']:.2f} s, CPU of the CLI and its plugins per run {gc['with']['cpu']:.2f} s "
                 f"vs {gc['without']['cpu']:.2f} s | no: a setting that every Go provider plugin of every stack would "
                 "inherit (each process then grows until 512 MiB before it collects), for a small share of the CPU |")
    lines += [
        "| no SDK reads after `up`/`destroy`; outputs from the engine's event for the stack resource | "
        "the *SDK* rows of the process table above | yes |",
        "| stack created and tagged as files in a local backend, no `stack init`/`stack tag set` (toolkit/diy_backend.py); "
        "`destroy --remove` | the *SDK* rows above; object-store backends keep `stack init` + `tag set` (while `up` "
        "runs) + `stack rm` | yes |",
        "| cheaper secrets provider for run stacks | every CLI process that opens a passphrase-encrypted stack "
        "derives the key (PBKDF2, 1,000,000 rounds, about 0.14 s idle); a salt computed ahead changes nothing "
        "(the CLI derives again to check it), the cloud providers need a KMS this machine lacks, and gocloud's "
        "`base64key://` is not linked into the CLI and would write the key into state. Kept: passphrase, derived "
        "twice per run (`up`, `destroy`) instead of in every SDK call | no change |",
        "| returning from `up` at the stack's outputs event, before the CLI exits | the job outlives `up`'s "
        "tail (the lean plugin exits at once), so the result comes no sooner | not built |",
        "| runner opens local storage without importing fsspec | fsspec is more than half of `import toolkit.runner` "
        "(`python -X importtime`) | yes |",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issue", type=int, choices=(15, 29), default=29, help="whose candidates to measure")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--part", choices=("all", "engine"), default="all", help="issue 29: every candidate, "
                        "or only the engine started ahead and the kept key (bench/standby29.py)")
    parser.add_argument("--upstream-cli", type=Path, help="issue 15: a Pulumi CLI of the same version built "
                        "without the patch")
    args = parser.parse_args()
    os.environ.update({"TOOLKIT_PROGRESS": "0", "TOOLKIT_HOME": tempfile.mkdtemp(prefix="toolkit-candidates-")})
    from report import Run  # bench/report.py, next to this script

    if args.issue == 15:
        saved = Run.begin().section("candidates15", measure, args.repeats, args.upstream_cli)
        print("\n".join(render_15(saved, {})))
    elif args.part == "engine":
        import standby29

        saved = Run.begin().section("standby29", standby29.measure, args.repeats)
        print("\n".join(standby29.render(saved, {})))
    else:
        import candidates29

        saved = Run.begin().section("candidates29", candidates29.measure, args.repeats)
        print("\n".join(candidates29.render_section(saved, {})))


if __name__ == "__main__":
    main()
