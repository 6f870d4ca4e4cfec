"""``fn.map`` on the real local cluster: one run stack, one Job of ``max_parallel`` pods claiming items.

The pods run this checkout's runner (``toolkit-runner:<version>[-<you>]-s3``,
built and imported into the cluster's containerd by ``runner_image``); each is
a worker numbered by its completion index, claims items in the S3 emulator and
writes their results there. The pods alive at once, and every pod the run ever
had, are counted through the Kubernetes API. The ``namespace`` fixture checks
that nothing of the run is left (Job, pods, Secret, account, role, binding, S3
prefix, stack).
"""

from __future__ import annotations

import threading
import time

import pytest
import s3fs

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
    """Counts the run's pods that are neither Succeeded nor Failed, as the API reports them, and every pod
    the run ever had, until stopped."""

    def __init__(self, kube: tuple, namespace: str, run_id: str) -> None:
        self.peak = 0
        self.names: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(kube[0], namespace, run_id), daemon=True)
        self._thread.start()

    def _poll(self, core, namespace: str, run_id: str) -> None:  # noqa: ANN001 - CoreV1Api
        while not self._stop.is_set():
            pods = core.list_namespaced_pod(namespace, label_selector=f"toolkit-run={run_id}").items
            alive = [pod for pod in pods if pod.status.phase not in ("Succeeded", "Failed")]
            self.peak = max(self.peak, len(alive))
            self.names.update(pod.metadata.name for pod in pods)
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def test_claiming_pods_run_items_in_order_at_most_max_parallel_pods_and_one_failure_is_its_own(
    map_pool, kube, namespace
):
    future = kubernetes(pool=map_pool)(square_unless_seven).map(range(20), max_parallel=4)
    counter = PodCounter(kube, namespace, future.run_id)
    try:
        iterator = iter(future)
        assert [next(iterator) for _ in range(7)] == [x * x for x in range(7)]
        with pytest.raises(ValueError, match="item 7 refuses") as raised:
            next(iterator)
        assert "square_unless_seven" in raised.value.remote_traceback
        assert [future.item(i).result() for i in range(8, 20)] == [x * x for x in range(8, 20)]  # unaffected
        assert future.item(7).attempts == 1  # a function's exception is a result: never retried
        job = kube[1].read_namespaced_job(f"toolkit-{future.run_id}", namespace)
        assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 4, 4)
        assert job.spec.backoff_limit_per_index == 0
    finally:
        future.cancel(timeout=180)
        peak = counter.stop()
    assert 1 <= peak <= 4, peak
    assert 1 <= len(counter.names) <= 4, sorted(counter.names)  # no pod per item: at most P, ever
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
    assert future.state == "cancelled"  # the namespace fixture: no Job, pod, Secret or S3 object left


def slow_third(x: int) -> int:
    import time

    if x == 3:
        time.sleep(15)
    return x


def _the_job(kube: tuple, namespace: str, run_id: str):  # noqa: ANN202 - a V1Job
    [job] = kube[1].list_namespaced_job(namespace, label_selector=f"toolkit-run={run_id}").items
    return job


def _claimant(info: ClusterInfo, namespace: str, run_id: str, index: int) -> str | None:
    """The worker named in item ``index``'s claim in the S3 emulator (None: not claimed)."""
    fs = s3fs.S3FileSystem(endpoint_url=info.s3_endpoint, skip_instance_cache=True)
    try:
        return fs.cat_file(f"{info.bucket}/{namespace}/{run_id}/claims/{index}").decode()
    except FileNotFoundError:
        return None


def _delete_pod_holding(kube: tuple, info: ClusterInfo, namespace: str, run_id: str, index: int) -> tuple[str, str]:
    """Delete, through the API, the running pod whose worker claimed item ``index``: ``(worker, pod name)``."""
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        worker = _claimant(info, namespace, run_id, index)
        selector = f"toolkit-run={run_id},batch.kubernetes.io/job-completion-index={worker}"
        running = [] if worker is None else [
            p for p in kube[0].list_namespaced_pod(namespace, label_selector=selector).items if p.status.phase == "Running"
        ]
        if running:
            time.sleep(2)  # the function has started
            kube[0].delete_namespaced_pod(running[0].metadata.name, namespace)
            return worker, running[0].metadata.name
        time.sleep(0.2)
    raise AssertionError(f"item {index}'s pod never ran")


@pytest.mark.parametrize("retries", [0, 1])
def test_a_deleted_pod_fails_only_its_item_or_its_item_runs_again_on_another_pod(
    map_pool, kube, namespace, k8s_cluster, retries
):
    bound = kubernetes(pool=map_pool, retries=retries)(slow_third)
    future = bound.map(range(6), max_parallel=3, return_exceptions=True)
    counter = PodCounter(kube, namespace, future.run_id)
    try:
        worker, deleted = _delete_pod_holding(kube, k8s_cluster, namespace, future.run_id, 3)
        results = list(future)
        claimant = _claimant(k8s_cluster, namespace, future.run_id, 3)
        job = _the_job(kube, namespace, future.run_id)
    finally:
        future.cancel(timeout=180)
        counter.stop()
    assert results[:3] + results[4:] == [0, 1, 2, 4, 5]
    assert len(counter.names) <= 3, sorted(counter.names)  # the deleted pod was not replaced
    assert job.spec.backoff_limit_per_index == 0 and deleted in counter.names
    if retries:
        assert results[3] == 3 and future.item(3).attempts == 2
        assert claimant is not None and claimant != worker  # it ran again on a surviving pod
        return
    assert isinstance(results[3], JobFailedError), results[3]
    message = str(results[3])
    assert future.item(3).attempts == 1 and future.item(3).state == "failed"
    assert f"item 3 of map {future.run_id}" in message and f"its worker {worker} died" in message, message
    assert deleted in message and "retries=N" in message, message


def storage_drivers(_x: int = 0) -> list[str]:
    import sys

    return sorted(name for name in ("s3fs", "fsspec", "botocore", "boto3") if name in sys.modules)


def test_pods_reach_storage_through_signed_requests_with_no_storage_driver(map_pool):
    """The client signs the run's requests (toolkit.presign): a call's pod and a map's claiming pods import
    neither fsspec nor s3fs nor botocore."""
    bound = kubernetes(pool=map_pool)(storage_drivers)
    assert bound(0) == []
    assert list(bound.map(range(3), max_parallel=2)) == [[], [], []]
