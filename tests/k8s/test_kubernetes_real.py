"""The kubernetes target on a real cluster: real pulumi-kubernetes provider, real Jobs, pods, kubelet.

Each run goes through ``@kubernetes``: the run stack creates the Secret,
ServiceAccount, Role, RoleBinding and Job on the local cluster
(``tests/k8s/cluster.py``); the pod (the toolkit's runner image with s3fs)
fetches the bundle from the S3 emulator over the node's network and writes the
result there; the watcher follows the Job through the Kubernetes API. After
each test the ``namespace`` fixture checks that nothing of the run is left.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.client import ApiClient

import toolkit
from tests.k8s.conftest import OBJECTS_GONE_SECONDS, objects_left_after, result_or_cancel, run_objects
from tests.test_interrupt import interrupt_a_blocked_call
from tests.test_secret_hygiene import SECRET, reports_what_it_sees, run_and_check
from toolkit import kubernetes, records
from toolkit.errors import JobFailedError, RunCancelledError

pytestmark = [pytest.mark.engine, pytest.mark.k8s]

IMAGE_ERROR_SECONDS = 120
"""Bound on how long a run with an unpullable image may take to be reported (pull, back-off, teardown)."""


def _pods(kube: tuple, namespace: str, run_id: str) -> list:
    return kube[0].list_namespaced_pod(namespace, label_selector=f"toolkit-run={run_id}").items


def _wait_for_pod(kube: tuple, namespace: str, run_id: str, phase: str | None = None, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = _pods(kube, namespace, run_id)
        if pods and (phase is None or pods[0].status.phase == phase):
            return pods[0]
        time.sleep(0.2)
    raise AssertionError(f"no pod of run {run_id} reached phase {phase or 'any'} within {timeout} s")


def test_success_returns_the_value_computed_in_the_pod(pool, kube, namespace):
    @kubernetes(pool=pool)
    def where_am_i(a, b):
        import os
        import socket

        print(f"adding {a} and {b}", flush=True)
        return {"sum": a + b, "host": socket.gethostname(), "uid": os.getuid(),
                "run_key_in_env": "TOOLKIT_RUN_KEY" in os.environ,
                "s3_key_from_secret": os.environ.get("AWS_ACCESS_KEY_ID")}

    future = where_am_i.submit(2, 3)
    value = result_or_cancel(future)
    assert value["sum"] == 5
    assert value["host"].startswith(f"toolkit-{future.run_id}")  # the Job's pod, not this machine
    assert value["uid"] == 1000 and value["run_key_in_env"] is False
    assert value["s3_key_from_secret"] == "toolkit-local"  # secret_env from the namespace's Secret
    assert "adding 2 and 3" in future.logs()


def test_remote_exception_is_reraised_with_its_type_and_traceback(pool):
    @kubernetes(pool=pool)
    def fail():
        raise KeyError("missing-key")

    with pytest.raises(KeyError, match="missing-key") as info:
        result_or_cancel(fail.submit())
    assert "in fail" in info.value.remote_traceback


def test_memory_override_reaches_the_pod_and_oom_kill_is_reported(pool, kube, namespace):
    @kubernetes(pool=pool, memory="256Mi")
    def hog():
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))

    future = hog.submit()
    pod = _wait_for_pod(kube, namespace, future.run_id)
    resources = pod.spec.containers[0].resources
    assert resources.limits["memory"] == "256Mi" and resources.requests["memory"] == "256Mi"
    with pytest.raises(JobFailedError, match=r"OOMKilled.*raise the 'memory' job variable"):
        result_or_cancel(future)


def test_unpullable_image_is_reported_as_an_image_pull_error_in_bounded_time(pool):
    @kubernetes(pool=pool, image="registry.invalid/toolkit/no-such-image:1")
    def never_runs():
        return 1

    started = time.monotonic()
    with pytest.raises(JobFailedError, match=r"could not pull its image 'registry.invalid/toolkit/no-such-image:1' "
                                             r"from registry 'registry.invalid' \((ErrImagePull|ImagePullBackOff)"):
        result_or_cancel(never_runs.submit(), IMAGE_ERROR_SECONDS)
    assert time.monotonic() - started < IMAGE_ERROR_SECONDS


def test_cancel_deletes_the_job_and_its_pods(pool, kube, namespace):
    @kubernetes(pool=pool)
    def forever():
        import time

        print("started", flush=True)
        time.sleep(3600)

    future = forever.submit()
    try:
        _wait_for_pod(kube, namespace, future.run_id, phase="Running")
        deadline = time.monotonic() + 120
        while "started" not in future.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "started" in future.logs()
        assert run_objects(kube, namespace)["jobs"] == [f"toolkit-{future.run_id}"]
    finally:
        assert future.cancel(timeout=180)
    with pytest.raises(RunCancelledError):
        future.result()
    # Job, pod, account, role, binding, secret: all deleted (the pod within its termination grace period)
    assert objects_left_after(kube, namespace, OBJECTS_GONE_SECONDS) == {}


# -- secrets and Ctrl-C on the cluster ------------------------------------------------------------------------


def test_secrets_never_in_plaintext_on_the_cluster(pool, kube, namespace, monkeypatch, capfd):
    """State, exports, preview, progress, logs, bundle (tests/test_secret_hygiene.py), and the live Job and pod
    as the API server returns them (what `kubectl get -o yaml` prints): only secretKeyRefs, never a value.

    In the pod the values are environment variables (Kubernetes injects secretKeyRef env at start), so
    the job's own /proc environ is not required clean here, unlike docker and process."""
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")
    core, batch, _rbac = kube
    serialize = ApiClient().sanitize_for_serialization

    def live_job(future) -> str:
        _wait_for_pod(kube, namespace, future.run_id, phase="Running")
        job = batch.read_namespaced_job(f"toolkit-{future.run_id}", namespace)
        env = job.spec.template.spec.containers[0].env
        refs = {e.name: e.value_from.secret_key_ref.name for e in env if e.value_from and e.value_from.secret_key_ref}
        assert refs["TOKEN"] == refs["TOOLKIT_RUN_KEY"] == f"toolkit-{future.run_id}"  # values come from the Secret
        return json.dumps([serialize(job), *map(serialize, _pods(kube, namespace, future.run_id))])

    bound = kubernetes(pool=pool)(reports_what_it_sees).with_options(env={"TOKEN": toolkit.secret(SECRET)})
    run_and_check(bound, {"kubernetes:core/v1:Secret"}, live_job, capfd, environ_clean=False)


@pytest.mark.parametrize("twice", [False, True], ids=["ctrl-c", "ctrl-c-again-during-teardown"])
def test_ctrl_c_in_a_blocked_call_tears_down_on_the_cluster(pool, namespace, tmp_path, twice):
    """A real client blocked in a call on the cluster; its run's objects and S3 prefix are checked by ``namespace``."""
    interrupt_a_blocked_call(tmp_path, "kubernetes", pool, twice=twice)


# -- infrastructure retries: the Job's backoffLimit -----------------------------------------------------------


def _delete_the_running_pod(kube: tuple, namespace: str, future) -> str:
    """Delete the run's pod once it runs the function, as a drain or an operator would; returns its name."""
    pod = _wait_for_pod(kube, namespace, future.run_id, phase="Running")
    deadline = time.monotonic() + 120
    while "nap starts" not in future.logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "nap starts" in future.logs()
    kube[0].delete_namespaced_pod(pod.metadata.name, namespace)
    return pod.metadata.name


def test_a_deleted_pod_runs_again_with_retries_and_the_call_succeeds(pool, kube, namespace):
    @kubernetes(pool=pool, retries=1)
    def napper():
        import time

        print("nap starts", flush=True)
        time.sleep(5)
        return "rested"

    future = napper.submit()
    deleted = _delete_the_running_pod(kube, namespace, future)
    assert result_or_cancel(future) == "rested"
    assert future.attempts == 2
    future.wait_teardown()
    record = records.load(future.run_id)
    assert record.attempts == 2 and deleted in record.retried_after[0]


def test_a_deleted_pod_without_retries_fails_naming_it_and_retries(pool, kube, namespace):
    @kubernetes(pool=pool)
    def napper():
        import time

        print("nap starts", flush=True)
        time.sleep(600)

    future = napper.submit()
    deleted = _delete_the_running_pod(kube, namespace, future)
    with pytest.raises(JobFailedError, match=rf"its pod {deleted} (was deleted while it ran|vanished).*pass retries=N"):
        result_or_cancel(future)
    assert future.attempts == 1
