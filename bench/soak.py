"""Chaos soak: calls and maps on ``@process`` and ``@docker`` while faults are injected at random, then
``toolkit gc`` and a count of what was lost and what was left.

    flock -x /tmp/toolkit-bench.lock .venv/bin/python bench/soak.py --calls 500 --faults 50

(It takes ``/tmp/toolkit-docker.lock`` exclusively itself, for its whole run:
it kills containers and restarts the Docker engine.)

Client processes (``--clients`` at a time, each given a few calls in turn)
make the calls with ``retries=2``, one after the other, and journal each
one; a fifth of the calls are maps of three items. The plan of calls and the
kinds of fault come from ``--seed``; the moments depend on the machine. A
fault is due each time another ``0.8 * calls / faults`` calls have ended, and
picks its victim at random among those present then:

- ``client_kill``: SIGKILL of a client with a call in flight (its calls not
  yet begun go to another client);
- ``docker_kill``: ``docker kill`` of a running job container of this soak;
- ``docker_restart``: the Docker engine stopped and started again
  (``tests/docker_restart.py``, under the machine's Docker lock);
- ``disk_full``: the run directories' filesystem filled up for a few seconds.
  ``$TOOLKIT_HOME/work``, where both targets keep each run's directory, is a
  small tmpfs mounted for the soak; a ballast file fills it, then goes.

A deleted pod is not among them: the soak does not start a Kubernetes cluster.

What "should have succeeded" means: a call whose client was not killed while
it was in flight, that no fault hit before its job first ran, and that at most
``retries`` faults hit while its job ran (the retry contract of
``toolkit.retries``: a job that ended without a result runs again). A fault
hits a call when it was aimed at its container, or when the engine restart
(a docker call) or the full disk (any call) overlapped it. A call that should
have succeeded and did not, or that returned a wrong value, is a lost result.
Calls hit while provisioning are counted apart, with what they raised.

After the last client, ``toolkit gc`` runs in the soak's TOOLKIT_HOME, and
``tests/leaks.py`` counts the stacks, their bookkeeping, run directories,
staged bundles and containers left; job processes still running from the
soak's home are counted too. Saved as section ``soak`` (bench/report.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.leaks, tests.docker_restart, when run as bench/soak.py

RETRIES = 2
MAP_ITEMS = 3
MAP_SHARE = 0.2
CHUNK = 5
"""Calls a client is given at a time."""
WORK_TMPFS_SIZE = "32m"
DISK_FULL_SECONDS = 3.0
CALL_TIMEOUT = 600.0
KINDS = ("client_kill", "docker_kill", "docker_restart", "disk_full")
TARGETS = ("process", "docker")
FAULTS_WITHIN = 0.8
"""The share of the calls (the first ones to end) while which the faults fall due."""
NOT_EXERCISED = {"pod_delete": "no Kubernetes cluster: the soak runs on process and docker only"}
GOAL = {"lost": 0, "left": 0}
EXCUSED = ("not started", "killed with its client", "stopped at the time bound")
"""Outcomes of calls that could not return: no result of theirs can be lost."""


def napper(index: int, seconds: float) -> int:
    """The soak's job: long enough for a fault to land in it, and a value that says which call it was."""
    time.sleep(seconds)
    return index * 7 + 1


# -- the plan -------------------------------------------------------------------------------------


def plan_calls(calls: int, seed: int, targets: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each call: its number, target, and the nap of each of its items (one item: a single call)."""
    rng = random.Random(seed)
    planned = []
    for number in range(calls):
        items = MAP_ITEMS if rng.random() < MAP_SHARE else 1
        planned.append({
            "call": number,
            "target": rng.choice(targets),
            "map": items > 1,
            "naps": [round(rng.uniform(0.5, 2.5), 2) for _ in range(items)],
        })
    return planned


def expected(call: dict[str, Any]) -> Any:
    values = [napper(call["call"] * 10 + item, 0) for item in range(len(call["naps"]))]
    return values if call["map"] else values[0]


def plan_faults(faults: int, calls: int, seed: int, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """``faults`` faults, the kinds as evenly spread as the count allows and shuffled; the i-th is due
    once (i + 1/2) * spread / faults calls have ended, ``spread`` being the first 80% of the calls, so
    that the last ones still find a victim among the calls left."""
    rng = random.Random(seed + 1)
    chosen = [kinds[i % len(kinds)] for i in range(faults)]
    rng.shuffle(chosen)
    spread = calls * FAULTS_WITHIN
    return [{"kind": kind, "due": int((i + 0.5) * spread / faults)} for i, kind in enumerate(chosen)]


# -- the client -----------------------------------------------------------------------------------


def client_main(spec_file: str, journal_file: str) -> None:
    """Make each call of the spec file in turn; journal its start, run, outcome and teardown."""
    import toolkit

    calls = json.loads(Path(spec_file).read_text())
    with open(journal_file, "a", buffering=1) as journal:

        def note(**event: Any) -> None:
            journal.write(json.dumps({**event, "t": time.time()}) + "\n")

        for call in calls:
            number = call["call"]
            note(call=number, event="start")
            bound = getattr(toolkit, call["target"])(retries=RETRIES)(napper)
            indices = [number * 10 + item for item in range(len(call["naps"]))]
            future = None
            try:
                if call["map"]:
                    future = bound.map(indices, call["naps"])
                else:
                    future = bound.submit(indices[0], call["naps"][0])
                note(call=number, event="submitted", run_id=future.run_id)
                value = future.result(timeout=CALL_TIMEOUT)
                outcome = "returned" if value == expected(call) else "wrong"
                note(call=number, event="ended", outcome=outcome, value=value, attempts=future.attempts)
            except Exception as exc:  # noqa: BLE001 - every failure is journalled and judged by the soak
                note(call=number, event="ended", outcome="failed", error=f"{type(exc).__name__}: {exc}"[:600],
                     run_id=getattr(future, "run_id", None))
            if future is not None:
                future.wait_teardown(CALL_TIMEOUT)
                error = future.teardown_error
                note(call=number, event="torn_down", error=None if error is None else str(error)[:600])


# -- the faults -----------------------------------------------------------------------------------


@dataclass
class Client:
    number: int
    process: subprocess.Popen[bytes]
    calls: list[int]
    journal: Path
    read: int = 0
    killed: bool = False
    reaped: bool = False


@dataclass
class Soak:
    """One soak's state while it runs: the clients, what their journals said, the faults so far."""

    home: Path
    env: dict[str, str]
    rng: random.Random
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    clients: list[Client] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    log: Callable[[str], None] = print

    def read_journals(self) -> None:
        for client in self.clients:
            if not client.journal.exists():
                continue
            with client.journal.open("rb") as handle:
                handle.seek(client.read)
                chunk = handle.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line cut by a SIGKILL stays unread
            client.read += len(complete)
            for line in complete.decode().splitlines():
                event = json.loads(line)
                state = self.calls.setdefault(event["call"], {})
                state["client"] = client.number
                state[event["event"]] = event["t"]
                for key in ("run_id", "outcome", "error", "attempts"):
                    if event.get(key) is not None:
                        state[key] = event[key]
                if event["event"] == "torn_down":
                    state["teardown_error"] = event.get("error")

    def reap(self, client: Client, queue: collections.deque[list[int]], crashed: list[dict[str, Any]]) -> None:
        """A client ended: its calls not begun go back to the queue; a killed client's calls begun and
        not ended are its fault's (also one it began after the fault picked it); any other exit but 0
        is a crash."""
        client.reaped = True
        self.read_journals()
        if client.killed:
            fault = next(f for f in self.faults if f["kind"] == "client_kill" and f["client"] == client.number)
            fault["calls"] = self.in_flight(client)
        elif client.process.returncode != 0:
            crashed.append({"client": client.number, "exit": client.process.returncode,
                            "stderr": (self.home / f"client-{client.number}.err").read_text()[-2000:]})
        unstarted = [n for n in client.calls if "start" not in self.calls.get(n, {})]
        if unstarted:
            queue.appendleft(unstarted)

    def stop_clients(self) -> list[int]:
        """SIGKILL the clients still running (the time bound, or the soak failed); returns their calls in flight."""
        stopped = []
        for client in self.clients:
            if client.process.poll() is None:
                client.process.kill()
                client.process.wait()
                self.read_journals()
                stopped += self.in_flight(client)
        return stopped

    def in_flight(self, client: Client) -> list[int]:
        return [n for n in client.calls if "start" in self.calls.get(n, {}) and "ended" not in self.calls[n]]

    def ended(self) -> int:
        killed = {n for fault in self.faults if fault["kind"] == "client_kill" for n in fault["calls"]}
        return sum(1 for n, state in self.calls.items() if "ended" in state or n in killed)

    def run_ids(self) -> set[str]:
        runs = self.home / "runs"
        return {path.name for path in runs.iterdir()} if runs.is_dir() else set()

    # each returns the fault's record, or None when it has no victim now (it is tried again later)

    def client_kill(self) -> dict[str, Any] | None:
        victims = [c for c in self.clients if c.process.poll() is None and not c.killed and self.in_flight(c)]
        if not victims:
            return None
        client = self.rng.choice(victims)
        client.process.send_signal(signal.SIGKILL)
        client.killed = True
        return {"client": client.number, "calls": self.in_flight(client)}

    def docker_kill(self) -> dict[str, Any] | None:
        ours = self.run_ids()
        listed = subprocess.run(
            ["docker", "ps", "--filter", "label=toolkit-run", "--filter", "status=running",
             "--format", '{{.Names}} {{.Label "toolkit-run"}}'],
            capture_output=True, text=True, timeout=60,
        )
        running = sorted(line.split() for line in listed.stdout.splitlines() if line.split()[-1] in ours)
        if not running:
            return None
        name, run_id = self.rng.choice(running)
        killed = subprocess.run(["docker", "kill", name], capture_output=True, text=True, timeout=60)
        if killed.returncode != 0:
            return None  # it ended meanwhile
        return {"container": name, "run_id": run_id}

    def docker_restart(self) -> dict[str, Any] | None:
        from tests.docker_restart import restart_docker_engine

        restart_docker_engine()
        return {}

    def disk_full(self) -> dict[str, Any] | None:
        ballast = self.home / "work" / ".soak-ballast"
        written = 0
        with ballast.open("wb") as handle:
            block = b"\0" * (1 << 20)
            try:
                while True:
                    handle.write(block)
                    handle.flush()
                    written += len(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        with contextlib.suppress(OSError):  # the unflushed tail has nowhere to go either
            handle.close()
        time.sleep(DISK_FULL_SECONDS)
        ballast.unlink()
        return {"filled_bytes": written}

    def inject(self, kind: str) -> dict[str, Any] | None:
        started = time.time()
        fault = getattr(self, kind)()
        if fault is None:
            return None
        fault.update(kind=kind, t=started, until=time.time())
        self.faults.append(fault)
        self.log(f"fault {len(self.faults)}: {kind} {json.dumps({k: v for k, v in fault.items() if k not in ('kind', 't', 'until')})}")
        return fault


# -- the soak -------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # a job process still inside: detach it


def docker_available() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def run_soak(calls: int, faults: int, seed: int, clients: int = 3, max_seconds: float = 3600.0,
             log: Callable[[str], None] = print, targets: tuple[str, ...] = TARGETS,
             kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """The whole soak in a TOOLKIT_HOME of its own; returns the data the section saves.

    With docker among ``targets`` it holds the machine's Docker lock throughout; on ``process``
    alone it touches no engine and injects only the faults that need none."""
    from tests.docker_restart import docker_engine_lock

    if "docker" not in targets:
        kinds = tuple(kind for kind in kinds if not kind.startswith("docker"))
    home = Path(tempfile.mkdtemp(prefix="toolkit-soak-"))
    try:
        with docker_engine_lock() if "docker" in targets else contextlib.nullcontext():
            if "docker" in targets and not docker_available():
                raise RuntimeError("no Docker engine answers; start it (toolkit toolchain install) or pass --targets process")
            with tmpfs(home / "work", WORK_TMPFS_SIZE):
                return _soak(home, calls, faults, seed, clients, max_seconds, targets, kinds, log)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _soak(home: Path, calls: int, faults: int, seed: int, clients: int, max_seconds: float,
          targets: tuple[str, ...], kinds: tuple[str, ...], log: Callable[[str], None]) -> dict[str, Any]:
    env = {**os.environ, "TOOLKIT_HOME": str(home), "TOOLKIT_PROGRESS": "0"}
    for name in ("TOOLKIT_POOLS_URL", "TOOLKIT_BACKEND_URL"):
        env.pop(name, None)
    planned = plan_calls(calls, seed, targets)
    pending = plan_faults(faults, calls, seed, kinds)
    soak = Soak(home, env, random.Random(seed + 2), log=log)
    queue = collections.deque(
        [call["call"] for call in planned[i: i + CHUNK]] for i in range(0, calls, CHUNK)
    )
    by_number = {call["call"]: call for call in planned}
    started = time.monotonic()
    deadline = started + max_seconds
    crashed: list[dict[str, Any]] = []
    stopped: list[int] = []
    gc: dict[str, Any] = {}
    try:
        while queue or any(c.process.poll() is None for c in soak.clients):
            soak.read_journals()
            for client in soak.clients:
                if client.process.poll() is None or client.reaped:
                    continue
                soak.reap(client, queue, crashed)
            now = time.monotonic()
            while queue and now < deadline and sum(c.process.poll() is None for c in soak.clients) < clients:
                _start_client(soak, queue.popleft(), by_number)
            if now > deadline + CALL_TIMEOUT:
                stopped = soak.stop_clients()
                break
            due = [fault for fault in pending if soak.ended() >= fault["due"]]
            for fault in due:
                if soak.inject(fault["kind"]) is not None:
                    pending.remove(fault)
                    break
            time.sleep(0.2)
        soak.read_journals()
        wall = time.monotonic() - started
        gc = _gc(env)
        from tests.leaks import leftovers

        left = leftovers(home=home, containers="docker" in targets)
        processes = _job_processes(home)
        if processes:
            left["job and plugin processes"] = processes
        workspaces = _workspace_dirs(soak.run_ids())
        if workspaces:
            left["Pulumi workspace directories"] = workspaces
        phases = _first_running(home)
    finally:
        soak.stop_clients()
        (home / "work" / ".soak-ballast").unlink(missing_ok=True)
        if "docker" in targets and not docker_available():
            from toolkit import settings
            from toolkit.toolchain import docker_engine

            docker_engine.ensure_running(log, settings.cache_dir() / "dockerd.log")
        if not gc:
            _gc(env)  # the soak itself failed: still leave nothing behind
        _sweep(home, soak.run_ids(), "docker" in targets)
    data = account(planned, soak.calls, soak.faults, phases, RETRIES, stopped)
    data.update(
        seed=seed, clients=clients, retries=RETRIES, map_items=MAP_ITEMS, targets=list(targets),
        faults_requested=faults, faults_not_injected=[fault["kind"] for fault in pending], kinds=list(kinds),
        not_exercised=NOT_EXERCISED, max_seconds=max_seconds, seconds=round(wall, 1),
        clients_crashed=crashed, gc=gc, left=left, disk_full_size=WORK_TMPFS_SIZE,
    )
    return data


def _start_client(soak: Soak, numbers: list[int], by_number: dict[int, dict[str, Any]]) -> None:
    number = len(soak.clients)
    spec = soak.home / f"client-{number}.json"
    spec.write_text(json.dumps([by_number[n] for n in numbers]))
    journal = soak.home / f"client-{number}.jsonl"
    with (soak.home / f"client-{number}.err").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, __file__, "--client", str(spec), str(journal)],
            env=soak.env, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
        )
    soak.clients.append(Client(number, process, numbers, journal))


def _gc(env: dict[str, str]) -> dict[str, Any]:
    """``toolkit gc --json`` in the soak's home: what it destroyed, and what it failed to."""
    done = subprocess.run([sys.executable, "-m", "toolkit", "gc", "--json"], env=env, capture_output=True,
                          text=True, timeout=900)
    try:
        found = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"exit": done.returncode, "destroyed": 0, "errors": [done.stderr[-2000:] or done.stdout[-2000:]]}
    return {
        "exit": done.returncode,
        "destroyed": sum(1 for leak in found["leaks"] if leak["destroyed"]),
        "errors": [f"{leak['stack']}: {leak['error']}" for leak in found["leaks"] if leak["error"]]
        + [f"{backend['backend_url']} unreadable: {backend['error']}" for backend in found["unreadable"]],
    }


def _sweep(home: Path, run_ids: set[str], docker: bool) -> None:
    """After the count: whatever the soak's runs still hold goes, so that a failed soak leaves nothing on the
    machine either (its containers, its job processes; its stacks go with its home)."""
    if docker and run_ids:
        listed = subprocess.run(["docker", "ps", "-a", "--filter", "label=toolkit-run",
                                 "--format", '{{.Names}} {{.Label "toolkit-run"}}'], capture_output=True, text=True)
        names = [line.split()[0] for line in listed.stdout.splitlines() if line.split()[-1] in run_ids]
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
    for line in _job_processes(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    for directory in _workspace_dirs(run_ids):
        shutil.rmtree(directory, ignore_errors=True)


def _workspace_dirs(run_ids: set[str]) -> list[str]:
    """The Pulumi workspace directories of the soak's runs (``engine.RunStack``'s ``toolkit-<run id>-*``)."""
    return sorted(str(path) for run_id in run_ids for path in Path(tempfile.gettempdir()).glob(f"toolkit-{run_id}-*"))


def _job_processes(home: Path) -> list[str]:
    """Processes whose command line or environment names the soak's home (a job, a Pulumi CLI or provider
    plugin that outlived its run), but not this one."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(home).encode() in arg for arg in argv) or f"TOOLKIT_HOME={home}".encode() in environ:
            found.append(f"{entry.name}: {b' '.join(argv).decode(errors='replace')[:200]}")
    return found


def _first_running(home: Path) -> dict[str, float]:
    """When each run's job first ran, from its record's phases."""
    found = {}
    runs = home / "runs"
    for record in runs.glob("*/record.json") if runs.is_dir() else ():
        phases = json.loads(record.read_text()).get("phases", [])
        running = [mark["at"] for mark in phases if mark["phase"] == "running"]
        if running:
            found[record.parent.name] = running[0]
    return found


# -- the accounting -------------------------------------------------------------------------------


def _overlap(window: tuple[float, float], start: float, end: float) -> bool:
    return window[0] < end and start < window[1]


def judge_call(call: dict[str, Any], state: dict[str, Any], faults: list[dict[str, Any]],
               running_at: float | None, retries: int, stopped: bool = False) -> dict[str, Any]:
    """One call's outcome, the faults that hit it (before and while its job ran), and whether its
    result was lost (see the module's docstring for what should have succeeded)."""
    number, run_id = call["call"], state.get("run_id")
    if "start" not in state:
        outcome = "not started"
    elif any(fault["kind"] == "client_kill" and number in fault["calls"] for fault in faults):
        outcome = "killed with its client"
    elif stopped:
        outcome = "stopped at the time bound"
    else:
        outcome = state.get("outcome", "no outcome journalled")
    hits = {"provisioning": 0, "job": 0}
    if "start" in state:
        start, end = state["start"], state.get("ended", float("inf"))
        ran = running_at if running_at is not None and running_at < end else end
        for fault in faults:
            window = (fault["t"], fault["until"])
            if fault["kind"] == "docker_kill" and fault["run_id"] == run_id:
                hits["job"] += 1
            elif fault["kind"] == "disk_full" or (fault["kind"] == "docker_restart" and call["target"] == "docker"):
                hits["provisioning"] += _overlap(window, start, ran)
                hits["job"] += _overlap(window, ran, end)
    should = outcome not in EXCUSED and not hits["provisioning"] \
        and hits["job"] <= retries
    return {
        "call": number, "target": call["target"], "map": call["map"], "run_id": run_id, "outcome": outcome,
        "error": state.get("error"), "hits": hits, "should_have_succeeded": should,
        "lost": outcome == "wrong" or (should and outcome != "returned"),
        "teardown_error": state.get("teardown_error"),
    }


def account(planned: list[dict[str, Any]], states: dict[int, dict[str, Any]], faults: list[dict[str, Any]],
            running_at: dict[str, float], retries: int, stopped: list[int] = ()) -> dict[str, Any]:
    """The soak's figures from the plan, the clients' journals, the faults and the runs' records."""
    judged = []
    for call in planned:
        state = states.get(call["call"], {})
        first_run = running_at.get(state.get("run_id") or "")
        judged.append(judge_call(call, state, faults, first_run, retries, call["call"] in stopped))
    count = collections.Counter
    hit_provisioning = [j for j in judged if j["hits"]["provisioning"] and j["outcome"] not in EXCUSED]
    over_budget = [j for j in judged if not j["hits"]["provisioning"] and j["hits"]["job"] > retries
                   and j["outcome"] not in EXCUSED]
    return {
        "calls": len(planned),
        "maps": sum(call["map"] for call in planned),
        "by_target": dict(count(call["target"] for call in planned)),
        "runs_started": sum(1 for j in judged if j["run_id"]),
        "not_started": sum(1 for j in judged if j["outcome"] == "not started"),
        "faults": dict(count(fault["kind"] for fault in faults)),
        "fault_log": [{k: v for k, v in fault.items() if k != "calls"} | {"calls": fault.get("calls")}
                      for fault in faults],
        "returned": sum(1 for j in judged if j["outcome"] == "returned"),
        "should_have_succeeded": sum(1 for j in judged if j["should_have_succeeded"]),
        "killed_with_client": sum(1 for j in judged if j["outcome"] == "killed with its client"),
        "stopped_at_time_bound": sum(1 for j in judged if j["outcome"] == "stopped at the time bound"),
        "hit_while_provisioning": {
            "calls": len(hit_provisioning),
            "failed": [{"call": j["call"], "target": j["target"], "error": j["error"]}
                       for j in hit_provisioning if j["outcome"] != "returned"],
        },
        "more_faults_than_retries": {
            "calls": len(over_budget),
            "failed": sum(1 for j in over_budget if j["outcome"] != "returned"),
        },
        "retried_and_returned": sum(1 for j in judged if j["hits"]["job"] and j["outcome"] == "returned"),
        "lost": [j for j in judged if j["lost"]],
        "teardown_errors": sum(1 for j in judged if j["teardown_error"]),
    }


# -- the section ----------------------------------------------------------------------------------


def left_count(data: dict[str, Any]) -> int:
    return sum(len(items) for items in data["left"].values())


def verdict(data: dict[str, Any]) -> bool:
    """The goal: no result lost, nothing left, every requested fault injected, gc without an error."""
    return (len(data["lost"]) == GOAL["lost"] and left_count(data) == GOAL["left"]
            and not data["faults_not_injected"] and not data["gc"]["errors"] and not data["clients_crashed"])


def _not_exercised(data: dict[str, Any]) -> dict[str, str]:
    """The fault kinds this soak left out, and why."""
    requested = data.get("kinds", KINDS)
    left_out = {kind: f"not requested: `--kinds {' '.join(requested)}`" for kind in KINDS if kind not in requested}
    return {**left_out, **data["not_exercised"]}


def _goal(data: dict[str, Any]) -> str:
    if not verdict(data):
        return "**missed**"
    full = data["calls"] >= 500 and sum(data["faults"].values()) >= 50 and set(data.get("kinds", KINDS)) == set(KINDS)
    return "met" if full else (f"met at this size and with these kinds ({data['calls']} calls, "
                               f"{sum(data['faults'].values())} faults), not the goal's")


def render(saved: dict[str, Any], sections: dict[str, dict[str, Any]]) -> list[str]:
    """Section ``soak``."""
    d = saved["data"]
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(d["faults"].items()))
    lost, left = d["lost"], left_count(d)
    provisioning = d["hit_while_provisioning"]
    lines = [
        "## Chaos soak (`bench/soak.py`)",
        "",
        f"{d['calls']} calls ({d['maps']} of them maps of {d['map_items']} items; "
        + ", ".join(f"{n} on {target}" for target, n in sorted(d["by_target"].items()))
        + f") from {d['clients']} client processes at a time, `retries={d['retries']}`, seed {d['seed']}, "
        f"{d['faults_requested']} faults requested; {d['seconds']:.0f} s until the last client ended.",
        "",
        "| figure | count |",
        "|---|---|",
        f"| runs started | {d['runs_started']} |",
        f"| calls not started (time bound of {d['max_seconds']:.0f} s) | {d['not_started']} |",
        f"| faults injected | {sum(d['faults'].values())}: {faults} |",
        f"| faults not injected (no victim when due, until the end) | {len(d['faults_not_injected'])} |",
        f"| results returned | {d['returned']} (of which {d['retried_and_returned']} after a fault hit their job) |",
        f"| calls killed with their client | {d['killed_with_client']} |",
        f"| calls in flight at the time bound (stopped) | {d.get('stopped_at_time_bound', 0)} |",
        f"| calls a fault hit before their job ran | {provisioning['calls']}, of which failed: {len(provisioning['failed'])} |",
        f"| calls hit more often than `retries` | {d['more_faults_than_retries']['calls']}, of which failed: "
        f"{d['more_faults_than_retries']['failed']} |",
        f"| calls that should have succeeded | {d['should_have_succeeded']} |",
        f"| **results lost** | **{len(lost)}** |",
        f"| runs whose own teardown failed (left to gc) | {d['teardown_errors']} |",
        f"| `toolkit gc` afterwards | destroyed {d['gc']['destroyed']} stacks, {len(d['gc']['errors'])} errors |",
        f"| **left behind after gc** (stacks, their bookkeeping, run directories, staged bundles, containers, "
        f"job and plugin processes, Pulumi workspace directories) | **{left}** |",
        "",
        f"Goal (500 calls, 50 faults: 0 lost, 0 left): {_goal(d)}. "
        "A call should have succeeded when its client was not killed while it was in flight, no fault hit it "
        "before its job first ran, and at most `retries` faults hit it while its job ran (a fault aimed at its "
        "container, or the engine restart for a docker call, or the full disk for any call, overlapping it). "
        "Not exercised: " + "; ".join(f"{kind} ({why})" for kind, why in _not_exercised(d).items()) + ".",
    ]
    for j in lost:
        lines.append(f"- lost: call {j['call']} ({j['target']}{', map' if j['map'] else ''}, run {j['run_id']}), "
                     f"{j['outcome']}, hits {j['hits']}: {j['error']}")
    for item in provisioning["failed"]:
        lines.append(f"- failed after a fault hit it while provisioning: call {item['call']} ({item['target']}): {item['error']}")
    for kind, items in d["left"].items():
        lines.append(f"- left: {kind}: {', '.join(items[:10])}")
    for error in d["gc"]["errors"]:
        lines.append(f"- gc error: {error}")
    for crash in d["clients_crashed"]:
        lines.append(f"- client {crash['client']} crashed (exit {crash['exit']})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="start no call after this")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="the faults to inject")
    parser.add_argument("--client", nargs=2, metavar=("SPEC", "JOURNAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(*args.client)
        return
    from report import Run  # bench/report.py, next to this script

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    saved = Run.begin().section("soak", run_soak, args.calls, args.faults, args.seed, args.clients,
                                args.max_seconds, progress, tuple(args.targets), tuple(args.kinds))
    print("\n".join(render(saved, {})))


if __name__ == "__main__":
    main()
