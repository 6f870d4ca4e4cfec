"""``fn.map`` on the real local cluster: one run stack, one Indexed Job, a pod per item.

The pods run this checkout's runner (``toolkit-runner:<version>[-<you>]-s3``,
built and imported into the cluster's containerd by ``runner_image``), read
their item at ``JOB_COMPLETION_INDEX`` from the S3 emulator and write its
result there. The pods alive at once are counted through the Kubernetes API.
The ``namespace`` fixture checks that nothing of the run is left (Job, pods,
Secret, account, role, binding, S3 prefix, stack).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.k8s import images
from tests.k8s.conftest import RUN_SECONDS, save_pool
from tests.k8s.layout import ClusterInfo, Layout
from toolkit import kubernetes
from toolkit.errors import JobFailedError, RunCancelledError

pytestmark = [pytest.mark.engine, pytest.mark.k8s]



@pytest.fixture(scope="session")
def runner_image(k8s_cluster: ClusterInfo) -> str:
    """This checkout's s3 runner image in the cluster (the cluster may have been started by another checkout)."""
    where = Layout.default()
    image, _ = images.import_runner(where.containerd_socket, where.cache, where.containerd_root / "toolkit-imports.json", print)
    return image


@pytest.fixture
def map_pool(k8s_cluster: ClusterInfo, namespace: str, runner_image: str, toolkit_home) -> str:
    return save_pool(f"k8s-map-{namespace}", k8s_cluster, namespace, image=runner_image)


def square_unless_seven(x: int) -> int:
    if x == 7:
        raise ValueError(f"item {x} refuses")
    return x * x


class PodCounter:
    """Counts the run's pods that are neither Succeeded nor Failed, as the API reports them, until stopped."""

    def __init__(self, kube: tuple, namespace: str, run_id: str) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(kube[0], namespace, run_id), daemon=True)
        self._thread.start()

    def _poll(self, core, namespace: str, run_id: str) -> None:  # noqa: ANN001 - CoreV1Api
        while not self._stop.is_set():
            pods = core.list_namespaced_pod(namespace, label_selector=f"toolkit-run={run_id}").items
            alive = [pod for pod in pods if pod.status.phase not in ("Succeeded", "Failed")]
            self.peak = max(self.peak, len(alive))
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def test_indexed_job_runs_items_in_order_at_most_max_parallel_pods_and_one_failure_is_its_own(map_pool, kube, namespace):
    future = kubernetes(pool=map_pool)(square_unless_seven).map(range(20), max_parallel=4)
    counter = PodCounter(kube, namespace, future.run_id)
    try:
        iterator = iter(future)
        assert [next(iterator) for _ in range(7)] == [x * x for x in range(7)]
        with pytest.raises(ValueError, match="item 7 refuses") as raised:
            next(iterator)
        assert "square_unless_seven" in raised.value.remote_traceback
        assert [future.item(i).result() for i in range(8, 20)] == [x * x for x in range(8, 20)]  # unaffected
        job = kube[1].read_namespaced_job(f"toolkit-{future.run_id}", namespace)
        assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 20, 4)
    finally:
        future.cancel(timeout=180)
        peak = counter.stop()
    assert 1 <= peak <= 4, peak
    assert future.counts()["completed"] == 20


def test_return_exceptions_on_the_cluster(map_pool):
    results = list(kubernetes(pool=map_pool)(square_unless_seven).map(range(9), return_exceptions=True))
    assert isinstance(results[7], ValueError) and results[8] == 64 and results[:7] == [x * x for x in range(7)]


def test_cancel_mid_map_deletes_the_job_and_its_pods(map_pool, kube, namespace):
    def sleeper(x):
        import time

        time.sleep(3600)

    future = kubernetes(pool=map_pool)(sleeper).map(range(6), max_parallel=2)
    deadline = time.monotonic() + RUN_SECONDS
    while future.counts()["running"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert future.counts()["running"] == 2, future.counts()
    assert future.cancel(timeout=180)
    with pytest.raises(RunCancelledError):
        list(future)
    assert future.state == "cancelled"


def slow_third(x: int) -> int:
    import time

    if x == 3:
        time.sleep(15)
    return x


def _the_job(kube: tuple, namespace: str, run_id: str):  # noqa: ANN202 - a V1Job
    [job] = kube[1].list_namespaced_job(namespace, label_selector=f"toolkit-run={run_id}").items
    return job


def _delete_item_pod(kube: tuple, namespace: str, run_id: str, index: int) -> str:
    """Delete, through the API, the running pod of item ``index``; returns its name."""
    core = kube[0]
    selector = f"toolkit-run={run_id},batch.kubernetes.io/job-completion-index={index}"
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        running = [p for p in core.list_namespaced_pod(namespace, label_selector=selector).items
                   if p.status.phase == "Running"]
        if running:
            time.sleep(2)  # the function has started
            core.delete_namespaced_pod(running[0].metadata.name, namespace)
            return running[0].metadata.name
        time.sleep(0.2)
    raise AssertionError(f"item {index}'s pod never ran")


def _settled_item_pods(kube: tuple, namespace: str, run_id: str, index: int) -> dict:
    """Item ``index``'s pods by name, once none is still running: a pod writes its result before it exits,
    so the map may have every result while the kubelet still reports the last pod as Running."""
    selector = f"toolkit-run={run_id},batch.kubernetes.io/job-completion-index={index}"
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        pods = {pod.metadata.name: pod for pod in kube[0].list_namespaced_pod(namespace, label_selector=selector).items}
        if all(pod.status.phase not in ("Pending", "Running") for pod in pods.values()) or time.monotonic() > deadline:
            return pods
        time.sleep(0.5)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_deleted_pod_fails_only_its_item_or_is_retried_per_index(map_pool, kube, namespace, retries):
    bound = kubernetes(pool=map_pool, retries=retries)(slow_third)
    future = bound.map(range(6), max_parallel=3, return_exceptions=True)
    try:
        deleted = _delete_item_pod(kube, namespace, future.run_id, 3)
        results = list(future)
        pods = _settled_item_pods(kube, namespace, future.run_id, 3)
        job = _the_job(kube, namespace, future.run_id)
    finally:
        future.cancel(timeout=180)
    assert results[:3] + results[4:] == [0, 1, 2, 4, 5]
    if retries:
        assert results[3] == 3
        # ... because the controller ran index 3 again, not because the deleted pod got to finish: one failed pod,
        # and the pod that ran it is a fresh one that counts the failure of its index.
        assert job.status.failed == 1, job.status
        [fresh] = [pod for name, pod in pods.items() if name != deleted]
        assert fresh.metadata.annotations["batch.kubernetes.io/job-index-failure-count"] == "1", fresh.metadata.annotations
        assert fresh.status.phase == "Succeeded", fresh.status.phase
        return
    assert isinstance(results[3], JobFailedError), results[3]
    assert "item 3" in str(results[3]) and "no result" in str(results[3]), str(results[3])
    assert deleted
