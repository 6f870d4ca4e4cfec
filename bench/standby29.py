"""Issue 29's last two candidates, measured against the current path in one run
(``bench/candidates.py --issue 29 --part engine``, section ``standby29``).

* The engine started ahead: a client that has made a call on a pool keeps one
  ``pulumi up`` started for a fresh run id (``Standby``): stack files written,
  CLI, backend, secrets manager and language host started, its inline program
  waiting. The next call's ``prepare`` takes that run id instead of a new one
  (the id is rendered into the job, names the stack, the storage and the
  record), and the call's ``up`` hands the engine its program. A standby no
  call claims within ``BOUND`` seconds runs an empty program and its stack is
  removed; so is the last one when the client is done (``Standbys.release``).
  The next standby starts when one is claimed ("at claim") or once the claiming
  call's ``up`` is over ("after up": not beside the call's own ``up``).
* The key kept by the client (toolkit/toolchain/stack_key.py, on main) against
  the passphrase secrets manager, which derives its key in every CLI process.

Each variant alternates with the current path, call after call, on ``@process``
(the docker plugin is not needed for either candidate's question). Then a
client holding a started standby is killed (SIGKILL) and ``toolkit gc`` runs:
what it destroyed and what the leak probes of tests/leaks.py still find are
saved, as are the cost of a standby nobody claims and the CLI processes per
call (``pulumi`` processes counted by this client).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
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

from toolkit.preparation import new_run_id as fresh_run_id  # noqa: E402 - the real one, which the candidate replaces

BOUND = 60.0
"""Seconds a standby waits for a call before it runs an empty program and is removed."""
HAND_OVER_BOUND = 600.0
"""Seconds a claimed standby waits for its call's program (a call that fails before its ``up`` releases it)."""


# -- the candidate ----------------------------------------------------------------------------------


class Standby:
    """One ``pulumi up`` of a fresh run stack, started before any call needs it; its program waits."""

    def __init__(self, pool_name: str, backend_url: str, secrets_provider: str, bound: float = BOUND) -> None:
        from toolkit.engine import RunStack, RunTag
        from toolkit.futures import DEFAULT_TTL
        from toolkit.progress import Progress
        from toolkit.workspace import owner_tag

        self.run_id = fresh_run_id()
        self.bound = bound
        self.state = "waiting"  # -> claimed -> handed; or waiting -> expired; claimed -> released
        self._changed = threading.Condition()
        self._program: Callable[[], None] | None = None
        self.asked = threading.Event()
        """Set once the engine, started, asks for the program."""
        self.progress: Any = None
        """The call's ``Progress`` once handed over; the engine's events go there."""
        own = Progress(self.run_id, show=False)

        def forward(event: Any) -> None:
            Progress.on_event(self.progress or own, event)

        own.on_event = forward  # type: ignore[method-assign]
        self._progress = own
        tag = RunTag(pool=pool_name, function="(standby)", owner=owner_tag(os.getpid()), created=time.time(),
                     ttl=DEFAULT_TTL)
        self.stack = RunStack(self.run_id, backend_url, self._wait_for_program, self._progress, tag=tag,
                              secrets_provider=secrets_provider)
        self.outputs: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.removed = threading.Event()
        self._thread = threading.Thread(target=self._up, name=f"standby-{self.run_id}", daemon=True)
        self._thread.start()

    def _wait_for_program(self) -> None:
        """The inline program the engine asks for once it has started: the call's, or nothing."""
        self.asked.set()
        with self._changed:
            if not self._changed.wait_for(lambda: self.state != "waiting", timeout=self.bound):
                self.state = "expired"
                return
            self._changed.wait_for(lambda: self.state != "claimed", timeout=HAND_OVER_BOUND)
            if self.state != "handed":
                self.state = "released"
                return
            program = self._program
        assert program is not None
        program()

    def _up(self) -> None:
        try:
            self.outputs = self.stack.up()
        except BaseException as exc:  # noqa: BLE001 - handed to the call's up(), or the stack is destroyed
            self.error = exc
        with self._changed:
            unclaimed = self.state in ("waiting", "expired", "released")  # a claimed one is its call's to destroy
            if self.state == "waiting":  # the engine ended before it asked for a program
                self.state = "expired"
        if unclaimed:
            self._remove()

    def _remove(self) -> None:
        """A stack that ran an empty program holds only its ``Stack`` resource: its files go without a CLI."""
        from toolkit import diy_backend, settings

        try:
            if self.error is None and self._only_the_stack_resource():
                diy_backend.remove_unused_stack(self.stack.backend_url, settings.RUN_PROJECT, self.stack.name)
                history = diy_backend.bookkeeping_dirs(self.stack.backend_url, settings.RUN_PROJECT)[0]
                shutil.rmtree(history / self.stack.name, ignore_errors=True)  # the empty update's record
                diy_backend.remove_leftovers(self.stack.backend_url, settings.RUN_PROJECT, self.stack.name)
                self.stack.close()
            else:
                self.stack.destroy_and_remove()
        finally:
            self.removed.set()

    def _only_the_stack_resource(self) -> bool:
        from toolkit import diy_backend, settings

        directory = diy_backend.stacks_dir(self.stack.backend_url, settings.RUN_PROJECT)
        if directory is None:
            return False
        checkpoint = json.loads((directory / f"{self.stack.name}.json").read_text())
        resources = checkpoint.get("checkpoint", {}).get("latest", {}).get("resources") or []
        return all(item.get("type") == "pulumi:pulumi:Stack" for item in resources)

    def claim(self) -> bool:
        """Reserve this engine for the call being prepared; False once it has expired."""
        with self._changed:
            if self.state != "waiting":
                return False
            self.state = "claimed"
            self._changed.notify_all()
            return True

    def hand(self, program: Callable[[], None], progress: Any) -> dict[str, Any]:
        """Give the claimed engine the call's program; returns the stack's outputs as ``RunStack.up`` does."""
        with self._changed:
            if self.state != "claimed":
                raise RuntimeError(f"standby {self.run_id} is {self.state}, not waiting for its call")
            self.stack.progress = self.progress = progress
            self._program, self.state = program, "handed"
            self._changed.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs

    def release(self) -> None:
        """No call will come: an empty program, then the stack removed; waits for that."""
        with self._changed:
            if self.state in ("waiting", "claimed"):
                self.state = "released"
                self._changed.notify_all()
        if self.state != "handed":
            self.removed.wait()


class _HandedStack:
    """What ``RunFuture`` gets for a claimed run id: the first ``up`` is the standby's; the rest delegates."""

    def __init__(self, standby: Standby, program: Callable[[], None], progress: Any, then: Callable[[], None]) -> None:
        self._standby, self._program, self._progress, self._then = standby, program, progress, then
        self._handed = False

    def up(self) -> dict[str, Any]:
        if self._handed:
            return self._standby.stack.up()
        self._handed = True
        try:
            return self._standby.hand(self._program, self._progress)
        finally:
            self._then()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._standby.stack, name)


class Standbys:
    """At most one standby per pool for this client: the next call's run id and engine."""

    def __init__(self, pool_name: str, start_next: str, bound: float = BOUND) -> None:
        from toolkit import settings
        from toolkit.pools.registry import PoolRegistry

        pool = PoolRegistry().get(pool_name)
        self.pool_name = pool_name
        self.backend_url = pool.backend_url or settings.default_backend_url()
        self.secrets_provider = settings.secrets_provider(pool.secrets_provider)
        self.start_next = start_next
        self.bound = bound
        self._lock = threading.Lock()
        self._ready: Standby | None = None
        self._claimed: dict[str, Standby] = {}
        self.started = 0
        self.claimed = 0

    def _start(self) -> None:
        with self._lock:
            if self._ready is None or self._ready.state != "waiting":
                self._ready = Standby(self.pool_name, self.backend_url, self.secrets_provider, self.bound)
                self.started += 1

    def next_run_id(self) -> str:
        """The run id of the call being prepared: a waiting standby's, else a fresh one."""
        with self._lock:
            standby, self._ready = self._ready, None
            if standby is not None and standby.claim():
                self._claimed[standby.run_id] = standby
                self.claimed += 1
                run_id = standby.run_id
            else:
                run_id = fresh_run_id()
        if self.start_next == "at claim":
            self._start()
        return run_id

    def stack_for(self, real: Callable[..., Any], run_id: str, backend_url: str, program: Callable[[], None],
                  progress: Any, *args: Any, **kwargs: Any) -> Any:
        """``RunFuture``'s ``RunStack(...)``: the standby of a claimed run id, else a stack made now."""
        with self._lock:
            standby = self._claimed.pop(run_id, None)
        then = self._start if self.start_next == "after up" else (lambda: None)
        if standby is not None:
            return _HandedStack(standby, program, progress, then)
        stack = real(run_id, backend_url, program, progress, *args, **kwargs)
        up = stack.up

        def up_then() -> dict[str, Any]:
            try:
                return up()
            finally:
                stack.up = up
                then()

        stack.up = up_then
        return stack

    def release(self) -> None:
        with self._lock:
            standbys = [s for s in (self._ready, *self._claimed.values()) if s is not None]
            self._ready, self._claimed = None, {}
        for standby in standbys:
            standby.release()


@contextmanager
def handing_over(standbys: Standbys) -> Iterator[Standbys]:
    """Calls submitted meanwhile take their run id and engine from ``standbys``."""
    import toolkit.futures as futures
    import toolkit.preparation as preparation

    real_id, real_stack = preparation.new_run_id, futures.RunStack
    preparation.new_run_id = standbys.next_run_id
    futures.RunStack = lambda *args, **kwargs: standbys.stack_for(real_stack, *args, **kwargs)  # type: ignore[assignment,misc]
    try:
        yield standbys
    finally:
        preparation.new_run_id, futures.RunStack = real_id, real_stack


@contextmanager
def started_ahead(pool_name: str, start_next: str) -> Iterator[Standbys]:
    """This client with the engine started ahead on ``pool_name``; every standby released at the end."""
    standbys = Standbys(pool_name, start_next)
    try:
        with handing_over(standbys):
            yield standbys
    finally:
        standbys.release()


# -- measuring ----------------------------------------------------------------------------------------


def calls(function: Any, variants: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]], repeats: int,
          gap: float) -> dict[str, dict[str, Any]]:
    """Per variant: submit→result, teardown, CPU medians; variants alternate call by call (a variant's standbys
    outlive its calls: ``_Ahead``). ``gap``: seconds after each call's teardown (a client's think time)."""
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


class _Ahead:
    """A variant with standbys: they outlive each call (the next call takes the one started during this one),
    while calls of the other variants, in between, see the plain path."""

    def __init__(self, start_next: str) -> None:
        self.standbys = Standbys("local-process", start_next)

    def __call__(self) -> contextlib.AbstractContextManager[Standbys]:
        return handing_over(self.standbys)

    def close(self) -> float:
        """Release the last standby; returns the seconds that took (what a client's exit would wait)."""
        started = time.perf_counter()
        self.standbys.release()
        return time.perf_counter() - started


def unclaimed_cost(pool_name: str, repeats: int) -> dict[str, float]:
    """A standby nobody claims, released at once after its engine asks for the program: wall of the
    release (what a client's exit waits) and CPU of its CLI process."""
    walls, cpus = [], []
    for _ in range(repeats):
        children, _own = _cpu()
        standbys = Standbys(pool_name, "at claim")
        standbys._start()
        standby = standbys._ready
        assert standby is not None
        standby.asked.wait(120)
        started = time.perf_counter()
        standbys.release()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu()[0] - children)
    return {"release wall": _median(walls), "cli cpu": _median(cpus)}


KILLED_CLIENT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {bench!r})
    import standby29
    standbys = standby29.Standbys("local-process", "at claim")
    standbys._start()
    standby = standbys._ready
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
        "gc destroyed": [leak.stack for leak in collected if leak.destroyed],
        "gc errors": [leak.error for leak in collected if leak.error],
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
    for name, factory in (("now", contextlib.nullcontext), ("started ahead", lambda: started_ahead("local-process", "at claim"))):
        with _counting() as started, factory():
            for _ in range(repeats):
                function.submit().result(timeout=300)
            from toolkit.futures import wait_for_teardowns

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

    import toolkit
    from tests.leaks import leftovers

    results: dict[str, Any] = {"repeats": repeats, "gap": gap, "load_start": os.getloadavg()[0]}

    @toolkit.process
    def in_process() -> int:
        return 2

    in_process()  # warm-up
    ahead_at_claim, ahead_after_up = _Ahead("at claim"), _Ahead("after up")
    variants = {
        "now": contextlib.nullcontext,
        "now, passphrase": passphrase,
        "started ahead, next at claim": ahead_at_claim,
        "started ahead, next after up": ahead_after_up,
    }
    results["process"] = calls(in_process, variants, repeats, gap)
    burst = _Ahead("after up")
    results["back to back"] = back_to_back(in_process, {"now": contextlib.nullcontext, "started ahead, next after up": burst},
                                           3, 5)
    burst.close()
    results["release at the end"] = {"at claim": ahead_at_claim.close(), "after up": ahead_after_up.close()}
    for name, kept in (("started ahead, next at claim", ahead_at_claim), ("started ahead, next after up", ahead_after_up)):
        results["process"][name]["standbys"] = {"started": kept.standbys.started, "claimed": kept.standbys.claimed}
    results["unclaimed standby"] = unclaimed_cost("local-process", 3)
    results["cli processes per call"] = cli_processes(in_process, 3)
    results["killed client"] = killed_client()
    results["left behind"] = {kind: names for kind, names in leftovers(containers=False).items() if names}
    results["load_end"] = os.getloadavg()[0]
    return results


def render(saved: dict[str, Any], sections: dict[str, dict[str, Any]]) -> list[str]:
    """Section ``standby29`` of bench/results.md (bench/report.py)."""
    data = saved["data"]
    process = data["process"]
    now, passphrase = process["now"], process["now, passphrase"]
    lines = [
        "## Tried for issue 29: the engine started ahead, the key kept by the client (`bench/standby29.py`)",
        "",
        f"`{saved['command']}`, started {saved['started']} (1-minute load average {data['load_start']:.1f} at the "
        f"start, {data['load_end']:.1f} at the end, {saved['host']['cores']} cores). `@process` calls one after "
        f"another, {data['repeats']} per variant after one warm-up round, the variants alternating call by call "
        f"with {data['gap']:g} s between calls. Medians: submit→result / teardown after the result / CPU of the "
        "CLI processes this client reaped during the call (a standby started for the next call is reaped "
        "during that one) + of the client.",
        "",
        "| variant | submit→result (min / median / max) | teardown | CPU | against *now* (submit→result) |",
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
    standbys = {name: process[name].get("standbys") for name in process if process[name].get("standbys")}
    lines += [
        "",
        "Standbys started / claimed by the calls: "
        + "; ".join(f"{name}: {s['started']} / {s['claimed']}" for name, s in standbys.items()) + ".",
        f"A standby nobody claims, released as soon as its engine asks for the program: {unclaimed['release wall']:.2f} s "
        f"to release (what a client's exit waits for), CLI {unclaimed['cli cpu']:.2f} CPU-s. Releasing each variant's "
        f"last standby at the end: {release['at claim']:.2f} s (next at claim), {release['after up']:.2f} s (next after up).",
        f"`pulumi` processes per call over {counts['calls']} calls: now {counts['now']:.2f}, started ahead "
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
        f"The key kept by the client against the passphrase: submit→result {now['latency']:.2f} s vs "
        f"{passphrase['latency']:.2f} s, teardown {now['teardown']:.2f} s vs {passphrase['teardown']:.2f} s, CLI "
        f"{now['cli_cpu']:.2f} vs {passphrase['cli_cpu']:.2f} CPU-s per call.",
    ]
    return lines
