"""Infrastructure retries: which failed jobs run again, how often, and what the user is told.

What is retried. The runner writes a signed result whenever it got to call the
function, whatever the function did: a value, or the exception the function
raised (``toolkit.runner``; it then exits 0, so job controllers do not restart
it either). A job that *ended without a result* therefore never finished its
call because of something outside it: its container was killed (``docker
kill``, an engine restart, the OOM killer), its process got a signal, its pod
was deleted, evicted or preempted, its node was lost. Those, and only those,
are infrastructure failures, and ``retries`` (a job variable of every target,
default 0) re-runs the call up to that many more times on a fresh job. An
exception raised by the user's function is a result and is never retried here:
retrying user code is the business of the user's code (or Prefect's
``@flow(retries=)``), which knows whether it is idempotent.

A start that can never succeed (an image without python3) also ends without a
result; the toolkit cannot tell every such case from a transient one, so it is
retried too, a bounded number of times, and the final error names the reason.

How. Targets whose job controller retries by itself (a Kubernetes Job's
``backoffLimit``, a Cloud Run job's ``max_retries``) declare that variable as
``Target.native_retries``: ``retries`` is carried into it and the engine adds
nothing on top (but a map of claiming workers, a Kubernetes map, has its items
retried by the engine: ``Target.retried_natively``). Every other target is
retried by the engine: the run stack
goes ``up`` again with the attempt number in ``RunContext.attempt``, which the
target's job resource carries as its ``replacement_trigger`` so the engine
replaces exactly that resource; storage (the bundle) stays, the secrets file of
a local job is written afresh.

This module owns the policy and the classification; ``futures`` (single calls)
and the map code (one policy per item) use it the same way::

    policy = prepared.retry_policy()  # RetryPolicy.from_variables(variables, native_retries, natively)
    ...  # the job (or the item) finished with ``status``
    if policy.retry(infrastructure_failure(status, has_result)):
        progress.say(policy.announcement())  # "attempt 2/3: retrying after <reason>"
        ...  # start a fresh job (``RunContext.attempt = policy.attempt``)
    elif not has_result:
        raise policy.failed_error(f"run {run_id} ({function})", reason, last_output)

A watcher of a target that retries natively reports ``JobStatus.attempt``;
``policy.observe(attempt, status.previous_failure)`` keeps the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import JobFailedError
from toolkit.infra.watch import JobStatus

VARIABLE = "retries"
"""The job variable's name (declared once, on ``JobVariables``)."""


def infrastructure_failure(status: JobStatus, has_result: bool) -> str | None:
    """Why the finished job died of its infrastructure, or None when it did not.

    ``has_result``: the run's storage holds a result (the function ran to a value
    or raised: never an infrastructure failure). A job still running is None too.
    """
    if has_result or not status.finished:
        return None
    if status.reason:
        return status.reason
    if status.exit_code is not None:
        return f"the job exited with status {status.exit_code} without writing a result"
    return "the job ended without writing a result"


@dataclass
class RetryPolicy:
    """``retries`` of one call (or one map item) and the attempts made so far.

    ``engine`` is False where the target's own controller retries (``native_retries``):
    the engine then never starts another attempt, it only reports the outcome.
    """

    retries: int = 0
    engine: bool = True
    attempt: int = 1
    """The attempt running now, from 1."""
    failures: list[str] = field(default_factory=list)
    """The reason each earlier attempt failed, in order."""

    @classmethod
    def from_variables(
        cls, variables: Mapping[str, Any], native: str | None = None, natively: bool = True
    ) -> RetryPolicy:
        """The policy of a call from its validated job variables; ``native``: the target's own variable
        (which ``templating.carry_into_native`` has set from ``retries``), which its controller honours
        unless ``natively`` is False (a map of claiming workers: the engine retries its items)."""
        return cls(retries=int(variables.get(native or VARIABLE) or 0), engine=native is None or not natively)

    @property
    def attempts(self) -> int:
        """Attempts allowed in all: the first one plus ``retries``."""
        return self.retries + 1

    @property
    def engine_retries(self) -> bool:
        """True when the engine may start another attempt (it must keep what a new ``up`` needs)."""
        return self.engine and self.retries > 0

    def retry(self, reason: str | None) -> bool:
        """Record a failed attempt; True when another one should start (``attempt`` then counts it).

        ``reason`` is ``infrastructure_failure(...)``: None (a result, or a user's
        exception) never starts another attempt.
        """
        if reason is None or not self.engine or self.attempt >= self.attempts:
            return False
        self.failures.append(reason)
        self.attempt += 1
        return True

    def observe(self, attempt: int, reason: str | None) -> bool:
        """A job controller that retries by itself (``native_retries``) has started ``attempt``.

        True when that is news (then ``announcement()`` describes it); ``reason``:
        why the attempt before it failed, if the watcher saw it.
        """
        if attempt <= self.attempt:
            return False
        why = reason or "the previous attempt ended without a result"
        self.failures.extend([why] * (attempt - self.attempt))
        self.attempt = attempt
        return True

    def announcement(self) -> str:
        """The progress line shown when the attempt now current starts."""
        return f"attempt {self.attempt}/{self.attempts}: retrying after {self.failures[-1]}"

    def failed_error(self, run: str, reason: str, tail: str = "") -> JobFailedError:
        """The error of a job that ended without a result on its last allowed attempt.

        ``run`` names the run (``run <id> (<function>)``); ``tail`` is the job's last output.
        """
        if self.attempt > 1:
            earlier = "; ".join(f"attempt {n}: {why}" for n, why in enumerate(self.failures, start=1))
            message = f"{run} failed on all {self.attempt} attempts; attempt {self.attempt}: {reason} ({earlier})"
        elif self.retries == 0:
            message = (
                f"{run} failed: {reason}. The job ended without a result, an infrastructure failure; "
                f"pass {VARIABLE}=N (a job variable) to run it again on a fresh job up to N times"
            )
        else:
            message = f"{run} failed: {reason}"
        return JobFailedError(message + "." + (f"\nLast job output:\n{tail}" if tail else ""))
