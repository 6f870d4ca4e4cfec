"""``fn.map`` end to end on process and docker: one real stack per map, workers claiming items.

Each map is a real run stack on the local file backend; docker maps run real
containers on the local engine, whose count while the map runs is read from
the engine itself (``docker ps`` filtered by the run's label). After each test
nothing of any run may be left (stacks, run directories, staged items,
containers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import toolkit
from tests.leaks import assert_nothing_left, leftovers
from tests.test_interrupt import Client
from toolkit import Submitter, gc, records, settings
from toolkit.errors import BundleError, ConfigError, JobFailedError, RunCancelledError
from toolkit.futures import wait_for_teardowns

pytestmark = pytest.mark.engine

TARGETS = ["process", pytest.param("docker", marks=pytest.mark.docker)]
N = 20


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def bind(target: str, fn, **job_variables):  # noqa: ANN001, ANN201 - any function
    return getattr(toolkit, target)(**job_variables)(fn)


def square_unless_seven(x: int) -> int:
    import random
    import time

    time.sleep(random.uniform(0, 0.05))  # items finish out of order
    if x == 7:
        raise ValueError(f"item {x} refuses")
    return x * x


def timed(x: int) -> tuple[int, float, float]:
    import time

    started = time.time()
    time.sleep(0.4)
    return x, started, time.time()


def sleeper(x: int) -> int:
    import time

    print(f"item {x} started", flush=True)
    time.sleep(600)
    return x


@pytest.mark.parametrize("target", TARGETS)
def test_results_in_input_order_and_one_failing_item_raises_its_own_exception(target):
    future = bind(target, square_unless_seven).map(range(N), max_parallel=3)
    iterator = iter(future)
    assert [next(iterator) for _ in range(7)] == [x * x for x in range(7)]
    with pytest.raises(ValueError, match="item 7 refuses") as raised:
        next(iterator)
    assert "square_unless_seven" in raised.value.remote_traceback  # the job's own traceback
    assert [future.item(i).result() for i in range(8, N)] == [x * x for x in range(8, N)]  # unaffected
    assert future.wait_teardown(120)
    assert future.counts() == {"pending": 0, "running": 0, "completed": N, "failed": 0}
    assert future.item(7).state == "completed" and isinstance(future.item(7).exception(), ValueError)


@pytest.mark.parametrize("target", TARGETS)
def test_return_exceptions_returns_the_failing_items_exception_in_its_place(target):
    results = list(bind(target, square_unless_seven).map(range(N), return_exceptions=True))
    assert isinstance(results[7], ValueError) and "remote_traceback" in vars(results[7])
    assert results[:7] + results[8:] == [x * x for x in range(N) if x != 7]


def _engine_count(target: str, run_id: str) -> int:
    """Workers running now, as the engine sees them: containers with the run's label, or processes
    whose command line names the run's directory."""
    if target == "docker":
        names = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=toolkit-run={run_id}"], capture_output=True, text=True, check=True
        ).stdout.split()
        return len(names)
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        interpreter = command[0] != b"sh"  # not the wrapper that records the worker's exit status
        if interpreter and b"toolkit.runner" in command and any(run_id.encode() in part for part in command):
            count += 1
    return count


@pytest.mark.parametrize("target", TARGETS)
def test_max_parallel_is_respected_as_the_engine_sees_it(target):
    future = bind(target, timed).map(range(12), max_parallel=3)
    seen: list[int] = []
    while not future.done():
        seen.append(_engine_count(target, future.run_id))
        time.sleep(0.05)
    results = list(future)
    assert max(seen) == 3, seen  # never more than max_parallel workers, and all three did run
    events = sorted([(start, 1) for _, start, _ in results] + [(end, -1) for _, _, end in results])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 3, results  # and never more than three items at once, from the items' own clocks
    assert [x for x, _, _ in results] == list(range(12))


@pytest.mark.parametrize("target", TARGETS)
def test_cancel_mid_map_tears_the_stack_down_and_unfinished_items_say_so(target):
    future = bind(target, sleeper).map(range(6), max_parallel=2)
    deadline = time.monotonic() + 120
    while future.counts()["running"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert future.counts()["running"] == 2, future.counts()
    assert future.cancel(timeout=120) is True
    assert future.state == "cancelled"
    with pytest.raises(RunCancelledError):
        list(future)
    assert future.counts()["failed"] == 6
    assert _engine_count(target, future.run_id) == 0
    assert not leftovers()


MAP_CLIENT = textwrap.dedent(
    """
    import sys, time
    import toolkit

    target = sys.argv[1]

    @getattr(toolkit, target)
    def sleeper(x):
        print(f"job started {x}", flush=True)
        time.sleep(600)
        return x

    print("client calling", flush=True)
    for value in sleeper.map(range(4), max_parallel=2):  # blocks: Ctrl-C arrives here
        print("a result", value, flush=True)
    print("the call returned", flush=True)
    """
)


@pytest.mark.parametrize("target", TARGETS)
def test_ctrl_c_while_iterating_a_map_cancels_and_tears_down(tmp_path, target):
    client = Client(tmp_path, target, source=MAP_CLIENT)
    run_id = client.wait_for(" on pool ", timeout=60).split()[0]
    client.wait_for("job started", timeout=120)
    client.ctrl_c()
    status = client.exit_status()
    output = client.output()
    assert status != 0 and "KeyboardInterrupt" in output and "a result" not in output, output
    record = records.load(run_id)
    assert (record.state, record.torn_down) == ("cancelled", True), output


def add(a: int, b: int, c: int = 0) -> int:
    import os

    return a + b + c + int(os.environ["OFFSET"])


def test_submitter_map_zips_iterables_and_takes_job_variables():
    with Submitter("local-process") as submitter:
        future = submitter.map(add, [1, 2, 3], (10, 20, 30, 40), job_variables={"env": {"OFFSET": "100"}})
        assert list(future) == [111, 122, 133]  # zip: the shortest iterable decides
        assert len(future) == 3


def test_as_completed_yields_every_item_once_with_its_state():
    future = bind("process", square_unless_seven).map(range(10), max_parallel=2)
    items = list(future.as_completed(timeout=120))
    assert sorted(item.index for item in items) == list(range(10))
    assert all(item.state == "completed" for item in items)
    assert {item.index: item.exception() is not None for item in items} == {i: i == 7 for i in range(10)}


def test_items_stream_to_disk_before_anything_is_provisioned(monkeypatch):
    """An item that cannot be pickled, or an iterable that raises, fails the map before any stack exists."""

    def items():
        yield 1
        yield threading.Lock()

    with pytest.raises(BundleError, match="positional argument 0"):
        bind("process", square_unless_seven).map(items())

    def broken():
        yield 1
        raise RuntimeError("the caller's generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        bind("process", square_unless_seven).map(broken())
    assert not leftovers()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_max_parallel_is_a_clear_error_before_anything_exists(bad):
    before = len(records.all_records())
    with pytest.raises(ConfigError, match="max_parallel must be a whole number"):
        bind("process", square_unless_seven).map(range(3), max_parallel=bad)
    assert not leftovers() and len(records.all_records()) == before


def test_a_map_over_no_items_creates_nothing():
    future = bind("process", square_unless_seven).map([])
    assert list(future) == [] and future.done() and future.run_id is None
    plan = bind("process", square_unless_seven).map.preview(iter(()))
    assert plan.items == 0 and plan.changes == []


@pytest.mark.parametrize("target", TARGETS)
def test_preview_shows_the_one_stack_with_its_workers(target):
    plan = bind(target, square_unless_seven).map.preview(range(50), max_parallel=4)
    assert (plan.items, plan.parallelism) == (50, 4)
    workers = [c for c in plan.changes if c.type in ("toolkit:index:LocalProcess", "docker:index/container:Container")]
    assert len(workers) == 4, [c.type for c in plan.changes]
    assert all("--items" in c.inputs.get("argv", c.inputs.get("command", [])) for c in workers)
    assert "a map of 50 items, at most 4 at once, in this one stack, by 4 workers claiming items" in str(plan)


def holder(x: int) -> int:
    """Item 3 holds its worker for a long time, unless an earlier attempt of it already did (a retry)."""
    import os
    import time

    run_dir = "/toolkit-run" if os.path.isdir("/toolkit-run") else os.path.dirname(os.getcwd())
    marker = os.path.join(run_dir, "item-3-was-held")
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(120)
    return x


def _kill_worker_holding(target: str, run_id: str, index: int) -> str:
    """Kill, from outside, the worker that claimed item ``index``: ``docker kill`` or SIGKILL. Returns its name."""
    claim = settings.home() / "work" / run_id / "claims" / str(index)
    worker = claim.read_text()
    if target == "docker":
        subprocess.run(["docker", "kill", f"toolkit-{run_id}-{worker}"], check=True, capture_output=True)
        return worker
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if command[0] != b"sh" and any(run_id.encode() in part for part in command) and b"--worker" in command:
            if command[command.index(b"--worker") + 1] == worker.encode():
                os.kill(int(pid), signal.SIGKILL)
                return worker
    raise AssertionError(f"no worker process {worker} of run {run_id}")


def _wait_until_running(future, index: int) -> None:  # noqa: ANN001 - a MapFuture
    deadline = time.monotonic() + 120
    while future.item(index).state != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.item(index).state == "running", future.counts()
    time.sleep(0.5)  # the function has started its sleep


@pytest.mark.parametrize("target", TARGETS)
def test_a_worker_killed_mid_item_fails_only_that_item_with_a_clear_error(target):
    future = bind(target, holder).map(range(8), max_parallel=2, return_exceptions=True)
    _wait_until_running(future, 3)
    worker = _kill_worker_holding(target, future.run_id, 3)
    results = list(future)
    assert results[:3] + results[4:] == [0, 1, 2, 4, 5, 6, 7]  # the surviving worker ran the rest
    assert isinstance(results[3], JobFailedError)
    message = str(results[3])
    assert f"item 3 of map {future.run_id} failed: its worker {worker} died" in message, message
    assert "killed" in message and "pass retries=N" in message, message
    assert future.item(3).state == "failed" and future.counts()["completed"] == 7


@pytest.mark.parametrize("target", TARGETS)
def test_with_retries_an_item_whose_worker_was_killed_runs_again_on_a_survivor(target):
    future = bind(target, holder, retries=1).map(range(8), max_parallel=2)
    _wait_until_running(future, 3)
    worker = _kill_worker_holding(target, future.run_id, 3)
    assert list(future) == list(range(8))  # item 3 too: its second attempt did not hold its worker
    claim = (settings.home() / "work" / future.run_id / "claims" / "3")
    assert future.wait_teardown(120) and not claim.exists()
    assert worker in ("0", "1")
    retried = records.load(future.run_id).retried_after
    assert len(retried) == 1 and retried[0].startswith(f"item 3: its worker {worker} died"), retried


@pytest.mark.parametrize("target", TARGETS)
def test_with_retries_a_map_whose_only_worker_was_killed_finishes_on_a_fresh_job(target):
    future = bind(target, holder, retries=1).map(range(6), max_parallel=1)
    _wait_until_running(future, 3)
    _kill_worker_holding(target, future.run_id, 3)
    assert list(future) == list(range(6))  # item 3 on its second attempt, 4 and 5 never claimed before
    assert future.wait_teardown(120)
    retried = records.load(future.run_id).retried_after
    assert [entry.split(":", 1)[0] for entry in retried] == ["item 3", "item 4", "item 5"], retried
    assert "killed" in retried[0], retried


@pytest.mark.parametrize("target", TARGETS)
def test_without_retries_a_map_whose_only_worker_was_killed_fails_the_items_left_clearly(target):
    future = bind(target, holder).map(range(6), max_parallel=1, return_exceptions=True)
    _wait_until_running(future, 3)
    _kill_worker_holding(target, future.run_id, 3)
    results = list(future)
    assert results[:3] == [0, 1, 2]
    assert all(isinstance(result, JobFailedError) for result in results[3:]), results
    assert "killed" in str(results[3]) and all("pass retries=N" in str(r) for r in results[3:]), results[3:]
    assert f"item 5 of map {future.run_id} failed" in str(results[5])
    assert records.load(future.run_id).retried_after == []


HOLDING_MAP_CLIENT = textwrap.dedent(
    """
    import sys, time
    import toolkit

    @getattr(toolkit, sys.argv[1])
    def sleeper(x):
        time.sleep(600)

    future = sleeper.map(range(4), max_parallel=2)
    while future.counts()["running"] < 2:
        time.sleep(0.1)
    print(future.run_id, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("target", TARGETS)
def test_a_client_killed_mid_map_leaves_a_stack_that_gc_destroys(tmp_path, target):
    script = tmp_path / "client.py"
    script.write_text(HOLDING_MAP_CLIENT)
    client = subprocess.Popen([sys.executable, str(script), target], stdout=subprocess.PIPE, text=True)
    run_id = client.stdout.readline().strip() if client.stdout else ""
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert run_id and _engine_count(target, run_id) == 2  # its two workers outlive it
    leaks = gc.collect().leaks
    assert [(leak.stack, leak.destroyed) for leak in leaks] == [(f"run-{run_id}", True)]
    assert _engine_count(target, run_id) == 0
    assert not records.RunRecord.spool_of(run_id).exists()
