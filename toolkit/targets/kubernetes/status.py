"""A Kubernetes Job's state from the Job and its pods as the API returns them: the status mapping.

The Job's conditions decide success and failure; the newest pod explains it
(exit code, OOMKilled, an image that cannot be pulled, a missing Secret). A
map's Job is one worker per completion index, each followed on its own
(``worker_status``).
"""

from __future__ import annotations

import time
from typing import Any

from toolkit.infra.image_registry import registry_of
from toolkit.infra.watch import JobStatus

_IMAGE_WAITING_REASONS = ("ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
_CONFIG_WAITING_REASONS = ("CreateContainerConfigError", "CreateContainerError")
"""Waiting reasons the kubelet never recovers from by itself: the run fails at once."""
_TRANSIENT_CONFIG_MESSAGES = ("failed to sync", "timed out waiting for the condition")
"""A config error with these words is the kubelet's secret/config-map cache lagging (a loaded node):
it retries by itself, and the Secret does exist, so the run keeps waiting."""
_UNAUTHORIZED_PULL_MESSAGES = ("401 Unauthorized", "unauthorized", "authorization failed", "no basic auth credentials")
PULL_SECRET_GRACE_SECONDS = 45.0
"""A pod that names pull Secrets yet was refused its image for want of credentials may have met the
same lag: the kubelet then pulls without the Secret it could not read yet. It pulls again after its
back-off (10 s, then 20 s), so such a refusal is final only this long after the pod was created."""


def failure_of_pod(pod: Any, container: str) -> tuple[int | None, str] | None:
    """``(exit code, reason)`` if the pod's runner container ended badly or can never start."""
    status = pod.status
    for state in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = state.state.waiting if state.state else None
        if waiting and waiting.reason in _IMAGE_WAITING_REASONS and not _pull_may_recover(pod, waiting.message):
            registry = registry_of(state.image)
            return None, (
                f"the pod could not pull its image {state.image!r} from registry {registry!r} ({waiting.reason}: "
                f"{waiting.message}). To fix: check that the image exists there (an environment image deleted "
                f"from the registry behind its stack: `toolkit env prune`, then call again to push it anew), that "
                f"the cluster's nodes can reach {registry!r}, and that they may pull from it (image_pull_secrets, "
                "or username and password_env in the pool's image_registry)"
            )
        if (
            waiting
            and waiting.reason in _CONFIG_WAITING_REASONS
            and not any(words in (waiting.message or "") for words in _TRANSIENT_CONFIG_MESSAGES)
        ):
            return None, (
                f"the container {state.name!r} could not be created ({waiting.reason}: {waiting.message}). "
                f"A Secret or key named in secret_env is probably missing from namespace {pod.metadata.namespace!r}"
            )
    runner = next((c for c in status.container_statuses or [] if c.name == container), None)
    terminated = runner.state.terminated if runner and runner.state else None
    code = terminated.exit_code if terminated else None
    if status.phase == "Failed" and status.reason:  # the kubelet's verdict (Evicted, DeadlineExceeded ...)
        return code, f"the pod failed ({status.reason}: {status.message})"
    if terminated and code != 0:
        if terminated.reason == "OOMKilled":
            return (
                code,
                "the container was killed for exceeding its memory limit (OOMKilled); raise the 'memory' job variable",
            )
        detail = f"{terminated.reason}: {terminated.message}" if terminated.message else terminated.reason
        return code, f"the container exited with code {code} ({detail})"
    if status.phase == "Failed":
        return code, "the pod failed without a reason from the kubelet"
    return None


def _pull_may_recover(pod: Any, message: str | None) -> bool:
    """True while an image pull refused for want of credentials may still succeed: the pod names pull
    Secrets and is younger than ``PULL_SECRET_GRACE_SECONDS`` (see there)."""
    if not pod.spec.image_pull_secrets or not any(words in (message or "") for words in _UNAUTHORIZED_PULL_MESSAGES):
        return False
    created = pod.metadata.creation_timestamp
    return created is not None and time.time() - created.timestamp() < PULL_SECRET_GRACE_SECONDS


def _pending_reason(pod: Any) -> str | None:
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason}: {condition.message}"
    return None


def job_status(job: Any, pods: list[Any], container: str) -> JobStatus:
    """The run's state from the Job and its pods as the API returns them (``V1Job``, ``V1Pod``).

    ``container`` names the runner container: only its exit decides the outcome.
    """
    status = _job_status(job, pods, container)
    # The Job controller retries by itself (backoffLimit = `retries`): each failed pod is one attempt.
    status.attempt = min((job.status.failed or 0) + 1, (job.spec.backoff_limit or 0) + 1)
    return status


def failed_for(job: Any) -> str | None:
    """The reason of the Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded ...), if it failed."""
    failed = next((c for c in job.status.conditions or [] if c.type == "Failed" and c.status == "True"), None)
    return failed.reason if failed else None


def _job_status(job: Any, pods: list[Any], container: str) -> JobStatus:
    pods = sorted(pods, key=lambda pod: pod.metadata.creation_timestamp)
    latest = pods[-1] if pods else None
    failure = failure_of_pod(latest, container) if latest is not None else None
    conditions = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
    if "Complete" in conditions:
        return JobStatus(state="succeeded", exit_code=0)
    if "Failed" in conditions:
        if failure:
            return JobStatus(state="failed", exit_code=failure[0], reason=failure[1])
        condition = conditions["Failed"]
        hint = "; raise active_deadline_seconds" if condition.reason == "DeadlineExceeded" else ""
        return JobStatus(state="failed", reason=f"the Job failed ({condition.reason}: {condition.message}){hint}")
    if latest is None:
        return JobStatus(state="pending")
    if failure and latest.status.phase != "Failed":
        return JobStatus(state="failed", exit_code=failure[0], reason=failure[1])  # never recovers by itself
    phase = latest.status.phase
    if phase == "Succeeded":
        return JobStatus(state="succeeded", exit_code=0)
    if phase == "Failed":
        if (job.status.failed or 0) > (job.spec.backoff_limit or 0):
            assert failure is not None
            return JobStatus(state="failed", exit_code=failure[0], reason=failure[1])
        return JobStatus(state="pending", reason=f"retrying after: {failure[1] if failure else phase}")
    if phase == "Running":
        return JobStatus(state="running")
    return JobStatus(state="pending", reason=_pending_reason(latest))


COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""The annotation holding an Indexed Job's pod's completion index: a map's worker number."""


def completion_index(pod: Any) -> int | None:
    """The completion index of an Indexed Job's pod (None: not one)."""
    value = (pod.metadata.annotations or {}).get(COMPLETION_INDEX, "")
    return int(value) if value.isdigit() else None


def index_set(text: str | None) -> set[int]:
    """The indexes a Job's ``completedIndexes`` or ``failedIndexes`` lists: ``"1,3-5"`` is {1, 3, 4, 5}."""
    found: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def worker_status(job: Any, pods: list[Any], index: int, container: str, failure: str | None) -> JobStatus:
    """Worker ``index`` of a map's Job from the Job's index lists, which outlive a deleted pod, and
    its ``pods``; ``failure``: why its pod failed, as the watcher saw it (a deletion says more than
    the exit code it causes). One worker failing fails only itself: the client gives its items back."""
    if index in index_set(job.status.completed_indexes):
        return JobStatus(state="succeeded", exit_code=0)
    latest = max(pods, key=lambda pod: pod.metadata.creation_timestamp) if pods else None
    pod_failure = failure_of_pod(latest, container) if latest is not None else None
    code = pod_failure[0] if pod_failure else None
    if index in index_set(job.status.failed_indexes):
        reason = failure or (pod_failure[1] if pod_failure else None) or "its pod failed"
        return JobStatus(state="failed", exit_code=code, reason=reason)
    ended = failed_for(job)
    if ended:  # past its deadline (or stopped otherwise), the Job's pods are deleted by its controller
        hint = "; raise active_deadline_seconds" if ended == "DeadlineExceeded" else ""
        return JobStatus(state="failed", exit_code=code, reason=f"the Job failed ({ended}){hint}")
    if latest is None:
        return JobStatus(state="pending")
    phase = latest.status.phase
    if phase == "Succeeded":
        return JobStatus(state="succeeded", exit_code=0)
    if pod_failure and (phase == "Failed" or code is None):  # an image or a Secret that never comes, too
        return JobStatus(state="failed", exit_code=code, reason=failure or pod_failure[1])
    if phase == "Running":
        return JobStatus(state="running")
    return JobStatus(state="pending", reason=_pending_reason(latest))
