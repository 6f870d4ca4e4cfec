"""``RunFuture``: one submitted call, from stack up to stack destroy.

The lifecycle runs in a non-daemon thread: stack up -> watch the job (state,
logs, timeout, cancel) -> collect the result -> destroy and remove the stack.
The result is handed over as soon as it is collected; teardown goes on in the
same thread and the interpreter cannot exit before it finishes. Teardown runs
in a ``finally`` on every path: success, failure, timeout, ``cancel()``, and
Ctrl-C in a thread blocked on ``result()`` (which cancels, waits for the
teardown, then re-raises).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

import fsspec

from toolkit import ahead, records
from toolkit.bundles import RESULT_NAME, unseal_result
from toolkit.engine import RunStack, RunTag
from toolkit.errors import ProvisionError, RunCancelledError, RunTimeoutError, TeardownError
from toolkit.guardrails.guard import RunGuard
from toolkit.infra.watch import JobStatus, JobWatcher
from toolkit.policy_packs import PolicyResult
from toolkit.preparation import PreparedRun
from toolkit.progress import Progress
from toolkit.retries import infrastructure_failure
from toolkit.workspace import owner_tag

DEFAULT_TTL = 24 * 3600
"""Seconds after which ``toolkit gc`` may destroy a run stack even if its owner seems alive."""
REPROVISION_SECONDS = 60.0
"""How long a fresh attempt's ``up`` is tried again while it fails (``RunFuture._up_again``)."""

_LIVE: set[RunFuture] = set()
_LIVE_LOCK = threading.Lock()


def wait_for_teardowns() -> None:
    """Block interpreter shutdown until every run's stack is torn down.

    Registered with ``threading._register_atexit`` *after* concurrent.futures
    registered its own hook, so it runs first (they run in reverse order):
    teardown still needs thread pools (the Automation API's gRPC server),
    which refuse new work once concurrent.futures has shut down.
    """
    ahead.release_waiting()
    with _LIVE_LOCK:
        pending = list(_LIVE)
    for future in pending:
        future.wait_teardown()
    ahead.release_unused_claims()


_shutdown_hook_registered = False


def _register_shutdown_hook() -> None:
    global _shutdown_hook_registered
    with _LIVE_LOCK:
        if not _shutdown_hook_registered:
            import concurrent.futures.thread  # noqa: F401 - its hook must be registered before ours

            threading._register_atexit(wait_for_teardowns)  # type: ignore[attr-defined]
            _shutdown_hook_registered = True


class RunFuture:
    """Handle on a submitted run: ``result()``, ``wait()``, ``done()``, ``state``, ``cancel()``, ``logs()``."""

    def __init__(self, prepared: PreparedRun, prefix_logs: bool = True) -> None:
        self._prepared = prepared
        self._prefix_logs = prefix_logs
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._torn_down = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.timings: dict[str, float] = dict(prepared.timings)
        """Seconds per phase: render, bundle, stack_up, run, collect, destroy."""
        self.teardown_error: TeardownError | None = None
        self.progress = Progress(prepared.run_id)
        self._record = records.RunRecord(
            run_id=prepared.run_id,
            function=prepared.function_name,
            pool=prepared.pool.name,
            target=prepared.target.name,
            stack=f"run-{prepared.run_id}",
            backend_url=prepared.backend_url,
            created=time.time(),
            owner_pid=os.getpid(),
            owner=owner_tag(os.getpid()),
            variables=prepared.variable_layers,
            items=prepared.context.fanout.count if prepared.context.fanout else None,
            environment=prepared.context.image or prepared.context.python,
        )
        self._record.phases = [records.PhaseMark(phase=self._record.state, at=self._record.created)]
        self.progress.on_step = self._record_resources
        self._retries = prepared.retry_policy()
        self._ttl = prepared.timeout * self._retries.attempts + 3600 if prepared.timeout else DEFAULT_TTL
        self._guard = RunGuard(prepared, self.progress, self._record.owner, self._record.created, self._ttl)
        try:
            self._guard.claim_now()  # block=False: PoolBusyError from submit(), before any record exists
        except BaseException:
            prepared.discard_bundle()
            raise
        self._record.save()
        _register_shutdown_hook()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._thread = threading.Thread(target=self._lifecycle, name=f"toolkit-run-{prepared.run_id}")
        self._thread.start()

    # -- public API -----------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self._prepared.run_id

    @property
    def state(self) -> str:
        """pending, waiting (for a pool slot), provisioning, running, collecting, completed, failed or cancelled."""
        return self._record.state

    @property
    def attempts(self) -> int:
        """Jobs started for this call so far: 1, plus one per infrastructure retry (``retries``)."""
        return self._retries.attempt

    def done(self) -> bool:
        """True once the result (or the error) is available."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the result is available; returns ``done()``."""
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> Any:
        """The function's return value, or its exception re-raised with the remote traceback.

        Ctrl-C while waiting cancels the run and waits for its teardown.
        """
        try:
            if not self._done.wait(timeout):
                raise FutureTimeoutError(f"run {self.run_id} has no result after {timeout}s (still {self.state})")
        except KeyboardInterrupt:
            self.progress.say("[yellow]interrupted: cancelling and tearing down the stack...[/yellow]")
            self._cancel.set()
            self._wait_teardown_through_interrupts()
            raise
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._done.wait(timeout):
            raise FutureTimeoutError(f"run {self.run_id} has no result after {timeout}s")
        return self._error

    def cancel(self, timeout: float | None = None) -> bool:
        """Stop the job and tear its stack down; blocks until torn down. False if already done."""
        if self._done.is_set():
            self._torn_down.wait(timeout)
            return False
        self._cancel.set()
        self._torn_down.wait(timeout)
        return True

    def logs(self) -> str:
        """Everything the job printed so far."""
        return self._record.logs()

    @property
    def policy_results(self) -> list[PolicyResult]:
        """Verdicts of the pool's policy packs on this run (advisory ones; a mandatory one raises)."""
        return list(self.progress.policy_results)

    def _wait_teardown_through_interrupts(self) -> None:
        """Wait for the teardown; a further Ctrl-C must not abandon it (a stack left up), so it only says so."""
        while True:
            try:
                self._torn_down.wait()
                return
            except KeyboardInterrupt:
                self.progress.say(
                    "[yellow]still tearing down the stack; Ctrl-C cannot stop that "
                    "(a kill -9 would leave it to `toolkit gc`)[/yellow]"
                )

    def wait_teardown(self, timeout: float | None = None) -> bool:
        """Wait until the run's stack is destroyed and removed."""
        return self._torn_down.wait(timeout)

    def __repr__(self) -> str:
        return f"<RunFuture {self.run_id} {self._prepared.function_name} on {self._prepared.pool.name}: {self.state}>"

    # -- lifecycle --------------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        self._record.update(state=state, error=error)

    def _cancelled(self) -> bool:
        return self._cancel.is_set() or self._record.cancel_requested()

    def _lifecycle(self) -> None:
        prepared = self._prepared
        stack: RunStack | ahead.HandedStack | None = None
        self.progress.say(
            f"{prepared.function_name} on pool [bold]{prepared.pool.name}[/bold] ({prepared.target.name})"
        )
        try:
            if self._guard.slot is not None:
                self._set_state("waiting")
                self._guard.admit(self._cancelled)
            self._set_state("provisioning")
            started = time.perf_counter()
            tag = RunTag(
                pool=prepared.pool.name,
                function=prepared.function_name,
                owner=self._record.owner,
                created=self._record.created,
                ttl=self._ttl,
            )
            program = lambda: prepared.target.program(prepared.context)  # noqa: E731
            stack = ahead.stack_for(prepared.run_id, program, self.progress, tag, lambda: RunStack(
                prepared.run_id,
                prepared.backend_url,
                program=program,
                progress=self.progress,
                tag=tag,
                secrets_provider=prepared.secrets_provider,
                policy_packs=prepared.policy_packs,
            ))
            if self._cancelled():
                raise RunCancelledError(f"run {self.run_id} was cancelled before it started")
            if prepared.policy_packs:
                self._record.mark("policy")
            self._guard.check_policies(stack)
            self._record_policy()
            self._record.mark("up")
            outputs = stack.up()
            if not self._retries.engine_retries:  # a retry's `up` reads the staged bundle again (buckets hash it)
                prepared.discard_bundle()
            self.timings["stack_up"] = time.perf_counter() - started

            started = time.perf_counter()
            status = self._run_attempts(stack, outputs)
            self.timings["run"] = time.perf_counter() - started

            self._set_state("collecting")
            started = time.perf_counter()
            self._value = self._collect(status)
            self.timings["collect"] = time.perf_counter() - started
            self._set_state("completed")
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller through result()
            self._error = exc
            state = "cancelled" if isinstance(exc, RunCancelledError) else "failed"
            self._record.traceback = getattr(exc, "remote_traceback", None) or None
            self._set_state(state, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._settle()
            self._done.set()
            prepared.discard_bundle()
            self._teardown(stack)

    def _record_policy(self) -> None:
        self._record.update(policy=[result.model_dump() for result in self.progress.policy_results])

    def _record_resources(self) -> None:
        steps = list(self.progress.steps.items())
        self._record.update(resources=[
            records.ResourceStep(urn=urn, type=type_, parent=parent, status=status)
            for urn, (type_, parent, status) in steps
        ])

    def _teardown(self, stack: RunStack | ahead.HandedStack | None) -> None:
        started = time.perf_counter()
        self._record_policy()
        self._record.mark("teardown")
        try:
            if stack is not None:
                stack.destroy_and_remove()
            self._record.mark("torn down")
            self._record.update(torn_down=True)
        except TeardownError as exc:
            self.teardown_error = exc
            self._record.update(teardown_failed=True)
            self.progress.say(f"[red]{exc}[/red]")
        finally:
            self.timings["destroy"] = time.perf_counter() - started
            self._guard.finish(
                self.state, self._error, torn_down=self.teardown_error is None, attempts=self._retries.attempt
            )
            outcome = self.state if self._error is None else f"{self.state}: {type(self._error).__name__}"
            self.progress.say(f"{outcome} ({sum(self.timings.values()):.1f}s)")
            self._torn_down.set()
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def _run_attempts(self, stack: RunStack | ahead.HandedStack, outputs: dict[str, Any]) -> JobStatus:
        """Watch the job; while it ends without a result and ``retries`` allow, run a fresh one.

        A new attempt is a new ``up`` of the same stack with ``RunContext.attempt``
        raised: the target replaces its job resource and keeps the storage.
        """
        prepared = self._prepared
        while True:
            self._set_state("running")
            status = self._watch(prepared.target.watcher(prepared.context, outputs))
            if not self._retries.retry(infrastructure_failure(status, self._has_result())):
                return status
            self._announce_attempt()
            if self._cancelled():
                raise RunCancelledError(f"run {self.run_id} was cancelled; its stack is being destroyed")
            self._set_state("provisioning")
            prepared.context = dataclasses.replace(prepared.context, attempt=self._retries.attempt)
            outputs = self._up_again(stack)

    def _up_again(self, stack: RunStack | ahead.HandedStack) -> dict[str, Any]:
        """The ``up`` of a fresh attempt, tried again for up to ``REPROVISION_SECONDS`` while it fails.

        What ended the attempt before is often still going on when the fresh one is
        provisioned: the Docker engine restarting, a full disk. A failed re-provisioning
        ran no job, so it uses none of ``retries``; it waits, longer each time, and
        the run fails with its error only once the bound is past. The first ``up`` is
        not retried: its failure is far more often the call's own (bad input, a policy).
        """
        deadline = time.monotonic() + REPROVISION_SECONDS
        delay = 1.0
        while True:
            try:
                return stack.up()
            except ProvisionError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self.progress.say(f"[yellow]provisioning the fresh job failed ({first_line}); "
                                  f"trying again in {delay:.0f}s[/yellow]")
            waited = time.monotonic() + delay
            while time.monotonic() < waited:
                if self._cancelled():
                    raise RunCancelledError(f"run {self.run_id} was cancelled; its stack is being destroyed")
                time.sleep(0.2)
            delay = min(delay * 2, 8.0)

    def _announce_attempt(self, now: bool = True) -> None:
        """Record the attempt now current; ``now``: it is starting (else it is over already: no news to show)."""
        if now:
            self.progress.say(f"[yellow]{self._retries.announcement()}[/yellow]")
        self._record.update(attempts=self._retries.attempt, retried_after=list(self._retries.failures))

    def _result_location(self) -> tuple[Any, str]:
        context = self._prepared.context
        fs, root = fsspec.core.url_to_fs(context.storage_url, **context.storage_options)
        return fs, f"{root}/{RESULT_NAME}"

    def _has_result(self) -> bool:
        fs, path = self._result_location()
        return bool(fs.exists(path))

    def _watch(self, watcher: JobWatcher) -> JobStatus:
        """Follow the job until it finishes, streaming logs; enforce timeout and cancel."""
        timeout = self._prepared.timeout
        started = time.monotonic()
        interval = 0.01  # a quick job's end is seen within a fifth of its run time; then up to 1 s
        while True:
            self._forward_logs(watcher.read_logs())
            status = watcher.status()
            if status.attempt and self._retries.observe(status.attempt, status.previous_failure):
                self._announce_attempt(now=not status.finished)  # the target's controller ran another attempt
            if status.finished or self._poll_outputs(watcher):
                self._forward_logs(watcher.read_logs())
                return status
            if self._cancelled():
                raise RunCancelledError(f"run {self.run_id} was cancelled; its stack is being destroyed")
            if timeout and time.monotonic() - started > timeout:
                raise RunTimeoutError(
                    f"run {self.run_id} exceeded its timeout of {timeout:g}s and was cancelled; "
                    "raise the 'timeout' job variable if it needs longer"
                )
            time.sleep(interval)
            interval = min(interval * 1.2, 1.0)

    def _poll_outputs(self, watcher: JobWatcher) -> bool:
        """Take in what the job produced so far; True once the run has all it waits for before the
        job is seen to end. A single call's one result is collected when the job ends: False."""
        return False

    def _settle(self) -> None:
        """Last step before ``done()``, on every path (a map resolves the items left without a result)."""

    def _forward_logs(self, text: str) -> None:
        if not text:
            return
        self._record.append_log(text)
        if not self._prepared.stream_output:
            return
        if self._prefix_logs:
            text = "".join(f"{self.run_id} | {line}\n" for line in text.splitlines())
        sys.stdout.write(text)
        sys.stdout.flush()

    def _collect(self, status: JobStatus) -> Any:
        """Read, verify and unpickle the result; a missing result becomes a clear job error."""
        context = self._prepared.context
        fs, path = self._result_location()
        if not fs.exists(path):
            reason = infrastructure_failure(status, has_result=False) or "the job ended without writing a result"
            tail = "".join(self.logs().splitlines(keepends=True)[-20:])
            raise self._retries.failed_error(f"run {self.run_id} ({self._prepared.function_name})", reason, tail)
        return unseal_result(fs.cat_file(path), context.run_key, f"{context.storage_url}/{RESULT_NAME}")
