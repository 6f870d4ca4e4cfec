"""Issue 29's engine started ahead (``toolkit.ahead``, the product's path since it was kept) and the key kept
by the client, each against the path without it in one run (``bench/candidates.py --issue 29 --part engine``,
section ``standby29``).

Variants alternate call by call on ``@process`` (neither question needs the docker plugin):

* *started ahead*: the client as it is; from its second call on a pool, each call finds the next call's
  ``pulumi up`` started, its inline program waiting (``toolkit.ahead``);
* *not started ahead*: the same client with ``toolkit.ahead`` off for that call (``without_ahead``), so the
  call starts its own engine;
* *not started ahead, passphrase*: also on the passphrase secrets manager, which derives its key in every
  CLI process, against the key the client keeps (toolkit/toolchain/stack_key.py).

Then calls one right after another, the cost of a standby nobody claims, the ``pulumi`` processes per call
with and without, and a client killed (SIGKILL) while its standby waits, then ``toolkit gc`` and what the
leak probes of tests/leaks.py still find.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))  # candidates29, beside this file

from candidates29 import _cpu, _median, one_call, passphrase  # noqa: E402

from toolkit import ahead, settings  # noqa: E402

POOL = "local-process"


@contextmanager
def without_ahead() -> Iterator[None]:
    """Calls submitted meanwhile start their own engine and start none for later calls."""
    real = ahead._key
    ahead._key = lambda _pool: None  # type: ignore[assignment]
    try:
        yield
    finally:
        ahead._key = real  # type: ignore[assignment]


@contextmanager
def passphrase_without_ahead() -> Iterator[None]:
    with without_ahead(), passphrase():
        yield


def _standby() -> ahead.Standby:
    """A standby of the default pool's kind, as a call's submission would start it."""
    return ahead.Standby(POOL, settings.default_backend_url(), settings.secrets_provider(None))


# -- measuring ----------------------------------------------------------------------------------------


def calls(function: Any, variants: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]], repeats: int,
          gap: float) -> dict[str, dict[str, Any]]:
    """Per variant: submit→result, teardown, CPU medians; variants alternate call by call (a variant's standbys
    outlive its calls). ``gap``: seconds after each call's teardown (a client's think time)."""
    samples: dict[str, dict[str, list[float]]] = {
        name: {"latency": [], "teardown": [], "cli_cpu": [], "client_cpu": []} for name in variants
    }
    for repeat in range(repeats + 1):  # the first round warms each variant up (its first standby)
        for name, variant in variants.items():
            measured = one_call(function, variant)
            time.sleep(gap)
            if repeat:
                for key, value in measured.items():
                    samples[name][key].append(value)
    return {name: {**{key: _median(values) for key, values in figures.items()},
                   "latency_samples": figures["latency"]} for name, figures in samples.items()}


def back_to_back(function: Any, variants: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]],
                 blocks: int, per_block: int) -> dict[str, dict[str, Any]]:
    """Submit→result medians of calls made one right after another's teardown (no think time), in blocks
    of ``per_block`` calls of one variant, the variants' blocks alternating."""
    latency: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(blocks):
        for name, variant in variants.items():
            with variant():
                for _ in range(per_block):
                    started = time.perf_counter()
                    future = function.submit()
                    assert future.result(timeout=300) == 2
                    latency[name].append(time.perf_counter() - started)
                    future.wait_teardown()
                    if future.teardown_error is not None:
                        raise future.teardown_error
    return {name: {"latency": _median(values), "latency_samples": values} for name, values in latency.items()}


def unclaimed_cost(repeats: int) -> dict[str, float]:
    """A standby nobody claims, released at once after its engine asks for the program: wall of the
    release (what a client's exit waits) and CPU of its CLI process."""
    walls, cpus = [], []
    for _ in range(repeats):
        children, _own = _cpu()
        standby = _standby()
        standby.asked.wait(120)
        started = time.perf_counter()
        standby.release()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu()[0] - children)
    return {"release wall": _median(walls), "cli cpu": _median(cpus)}


KILLED_CLIENT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {bench!r})
    import standby29
    standby = standby29._standby()
    standby.asked.wait(120)
    print(standby.run_id, flush=True)
    time.sleep(600)
""")


def killed_client() -> dict[str, Any]:
    """A client whose standby's engine waits for a program is killed (SIGKILL); then ``toolkit gc``.

    Saves the stacks gc destroyed and what the leak probes find afterwards (tests/leaks.py)."""
    from tests.leaks import leftovers
    from toolkit import gc

    client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT.format(bench=str(HERE))], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    run_id = client.stdout.readline().strip()
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    stacks_after_kill = [name for name, _tags in _run_stacks()]
    waited = time.perf_counter()
    orphan_exited = _wait_for_orphans(f"run-{run_id}", 120)
    orphan_seconds = time.perf_counter() - waited
    lock_left = _locked(f"run-{run_id}")
    collected = gc.collect()
    return {
        "run id": run_id,
        "stacks after the kill": stacks_after_kill,
        "orphaned CLI exited within 120 s": orphan_exited,
        "seconds until it exited": orphan_seconds,
        "lock it left": lock_left,
        "gc destroyed": [leak.stack for leak in collected.leaks if leak.destroyed],
        "gc errors": [leak.error for leak in collected.leaks if leak.error]
        + [f"{backend.backend_url}: {backend.error}" for backend in collected.unreadable],
        "left after gc": {kind: names for kind, names in leftovers(containers=False).items() if names},
    }


def _wait_for_orphans(stack: str, timeout: float) -> bool:
    """Wait until no process names ``stack`` on its command line (the orphaned ``pulumi up`` has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _processes_naming(stack):
            return True
        time.sleep(0.2)
    return False


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _locked(stack: str) -> bool:
    from toolkit import diy_backend, settings

    locks = diy_backend.bookkeeping_dirs(settings.default_backend_url(), settings.RUN_PROJECT)[1] / stack
    return locks.is_dir() and any(locks.iterdir())


def _run_stacks() -> list[tuple[str, dict[str, str]]]:
    from toolkit import settings
    from toolkit.engine import list_run_stacks

    return list_run_stacks(settings.default_backend_url())


def cli_processes(function: Any, repeats: int) -> dict[str, float]:
    """``pulumi`` processes started per call, with and without standbys (counted from this client's children)."""
    counts: dict[str, float] = {}
    from toolkit.futures import wait_for_teardowns

    for name, factory in (("now", without_ahead), ("started ahead", contextlib.nullcontext)):
        wait_for_teardowns()  # no standby, no call counted, from before
        with _counting() as started, factory():
            for _ in range(repeats):
                function.submit().result(timeout=300)
            wait_for_teardowns()
        counts[name] = started["pulumi"] / repeats
    return {**counts, "calls": repeats}


@contextmanager
def _counting() -> Iterator[dict[str, int]]:
    """Counts ``pulumi`` processes this client starts (``subprocess.Popen`` of the CLI)."""
    counted = {"pulumi": 0}
    real = subprocess.Popen.__init__

    def init(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        first = args[0] if isinstance(args, (list, tuple)) else str(args).split()[0]
        if Path(str(first)).name == "pulumi":
            counted["pulumi"] += 1
        real(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        subprocess.Popen.__init__ = real  # type: ignore[method-assign]


def measure(repeats: int, gap: float = 0.5) -> dict[str, Any]:
    os.environ["TOOLKIT_ENGINE_AHEAD"] = "1"  # opt-in (settings.engine_ahead); ``without_ahead`` turns it off
    import toolkit
    from tests.leaks import leftovers
    from toolkit.futures import wait_for_teardowns

    results: dict[str, Any] = {"repeats": repeats, "gap": gap, "load_start": os.getloadavg()[0]}

    @toolkit.process
    def in_process() -> int:
        return 2

    in_process()  # warm-up
    variants: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
        "not started ahead": without_ahead,
        "not started ahead, passphrase": passphrase_without_ahead,
        "started ahead": contextlib.nullcontext,
    }
    results["process"] = calls(in_process, variants, repeats, gap)
    results["back to back"] = back_to_back(in_process, {"not started ahead": without_ahead,
                                                        "started ahead": contextlib.nullcontext}, 3, 5)
    started = time.perf_counter()
    wait_for_teardowns()  # releases the standby left waiting
    results["release at the end"] = time.perf_counter() - started
    results["unclaimed standby"] = unclaimed_cost(3)
    results["cli processes per call"] = cli_processes(in_process, 3)
    results["killed client"] = killed_client()
    results["left behind"] = {kind: names for kind, names in leftovers(containers=False).items() if names}
    results["load_end"] = os.getloadavg()[0]
    return results


def render(saved: dict[str, Any], sections: dict[str, dict[str, Any]]) -> list[str]:
    """Section ``standby29`` of bench/results.md (bench/report.py)."""
    data = saved["data"]
    process = data["process"]
    now, passphrase = process["not started ahead"], process["not started ahead, passphrase"]
    lines = [
        "## Issue 29: the engine started ahead, the key kept by the client (`bench/standby29.py`)",
        "",
        f"`{saved['command']}`, started {saved['started']} (1-minute load average {data['load_start']:.1f} at the "
        f"start, {data['load_end']:.1f} at the end, {saved['host']['cores']} cores). `@process` calls one after "
        f"another, {data['repeats']} per variant after one warm-up round, the variants alternating call by call "
        f"with {data['gap']:g} s between calls. Medians: submit→result / teardown after the result / CPU of the "
        "CLI processes this client reaped during the call (a standby started for the next call is reaped "
        "during that one) + of the client.",
        "",
        "| variant | submit→result (min / median / max) | teardown | CPU | against *not started ahead* (submit→result) |",
        "|---|---|---|---|---|",
    ]
    for name, figures in process.items():
        ratio = figures["latency"] / now["latency"]
        spread = figures["latency_samples"]
        lines.append(f"| {name} | {min(spread):.2f} / **{figures['latency']:.2f}** / {max(spread):.2f} s | "
                     f"{figures['teardown']:.2f} s | CLI "
                     f"{figures['cli_cpu']:.2f} + client {figures['client_cpu']:.2f} CPU-s | {ratio:.2f}× |")
    burst = data.get("back to back")
    if burst:
        lines += ["", "Calls one right after the other's teardown (no think time; blocks of 5 calls of one variant, "
                  "alternating): submit→result median "
                  + ", ".join(f"{name} {figures['latency']:.2f} s" for name, figures in burst.items()) + "."]
    unclaimed, release = data["unclaimed standby"], data["release at the end"]
    counts, killed = data["cli processes per call"], data["killed client"]
    lines += [
        "",
        f"A standby nobody claims, released as soon as its engine asks for the program: {unclaimed['release wall']:.2f} s "
        f"to release (what a client's exit waits for), CLI {unclaimed['cli cpu']:.2f} CPU-s. Releasing the standby "
        f"left waiting at the end (`wait_for_teardowns`): {release:.2f} s.",
        f"`pulumi` processes per call over {counts['calls']} calls: not started ahead {counts['now']:.2f}, started ahead "
        f"{counts['started ahead']:.2f} "
        "(the last standby's `up` included).",
        "",
        f"A client killed (SIGKILL) while its standby's engine waited for a program (run {killed['run id']}): its "
        f"orphaned `pulumi up` {'exited' if killed['orphaned CLI exited within 120 s'] else 'had not exited'} "
        f"after {killed['seconds until it exited']:.1f} s, {'leaving its lock' if killed['lock it left'] else 'lock released'}; "
        f"`toolkit gc` destroyed {', '.join(killed['gc destroyed']) or 'nothing'}"
        f"{' (errors: ' + '; '.join(killed['gc errors']) + ')' if killed['gc errors'] else ''}; "
        f"the leak probes then found {killed['left after gc'] or 'nothing'}.",
        f"Left behind after the whole run (tests/leaks.py, no containers): {data['left behind'] or 'nothing'}.",
        "",
        f"The key kept by the client against the passphrase (both not started ahead): submit→result {now['latency']:.2f} s vs "
        f"{passphrase['latency']:.2f} s, teardown {now['teardown']:.2f} s vs {passphrase['teardown']:.2f} s, CLI "
        f"{now['cli_cpu']:.2f} vs {passphrase['cli_cpu']:.2f} CPU-s per call.",
    ]
    return lines
