"""Environments on the real cluster: images pushed to a real registry and pulled by digest by the kubelet.

The registries are Debian's ``docker-registry`` on loopback (``tests/registry.py``):
``open`` (no authentication, deletion allowed) and ``locked`` (htpasswd, deletion
refused). Each test's pool pushes under its own repository path, so sessions
sharing the registries never share an image. The environment image is built
FROM the cluster's runner image by the environment stack, pushed by the same
stack, and the Job's pod pulls ``repo@sha256:...`` through containerd. The
``namespace`` fixture checks after each test that no run stack, Job, pod or
Secret is left; environment stacks and images stay until pruned, which the
tests do and check.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.conftest import RUN_SECONDS, result_or_cancel, save_pool
from tests.registry import Registry, shared
from toolkit import kubernetes, settings
from toolkit.environments import manage, stack
from toolkit.environments.base import describe_image, image_id
from toolkit.errors import ImagePushError, JobFailedError
from toolkit.preparation import prepare

pytestmark = [pytest.mark.engine, pytest.mark.k8s, pytest.mark.slow]

PULL_ERROR_SECONDS = 60
"""Bound on reporting an image the kubelet cannot pull (ErrImagePull / ImagePullBackOff, then teardown)."""
PASSWORD_ENV = "TOOLKIT_TEST_REGISTRY_PASSWORD"
HUMANIZE = "humanize==4.11.0"
"""Not in the runner image, and another version than the caller's (the auto-detected test uses that one)."""


@pytest.fixture(scope="session")
def registries() -> Iterator[dict[str, Registry]]:
    with shared() as found:
        yield found


@pytest.fixture
def repository_path() -> str:
    """A repository path of this test alone (sessions share the registries)."""
    return f"tk-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scores.csv").write_text("name,score\nada,3000\nbob,5000\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _prune_environments() -> Iterator[None]:
    """Every test leaves no environment of its own (the images are on the shared engine and registries)."""
    yield
    failed = [result for result in manage.prune() if result.error]
    assert not failed, f"could not prune environments: {failed}"


def _env_stacks() -> list[str]:
    return [name for name, _tag in stack.list_stacks(settings.default_backend_url())]


def _pod_image(kube: tuple, namespace: str, run_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = kube[0].list_namespaced_pod(namespace, label_selector=f"toolkit-run={run_id}").items
        if pods:
            return pods[0].spec.containers[0].image
        time.sleep(0.2)
    raise AssertionError(f"no pod of run {run_id} within {timeout} s")


def test_a_package_only_the_caller_has_runs_in_a_job_from_the_pushed_image(
    k8s_cluster, namespace, kube, registries, repository_path, project
):
    import humanize

    open_registry = registries["open"]
    assert describe_image(k8s_cluster.runner_image, "test").has("humanize") is None  # only the caller has it
    pool = save_pool(f"k8s-{namespace}", k8s_cluster, namespace, image_registry=f"{open_registry.host}/{repository_path}")

    @kubernetes(pool=pool, include_files=["data/scores.csv"])
    def report() -> tuple[str, str]:
        from pathlib import Path

        rows = Path("data/scores.csv").read_text().splitlines()[1:]
        return humanize.__version__, humanize.intcomma(sum(int(row.split(",")[1]) for row in rows))

    plan = report.preview()
    environment = plan.environment
    assert environment.status == "build"
    assert environment.registry == f"{open_registry.host}/{repository_path}/toolkit-env"
    assert "pushed to: " in str(plan)

    future = report.submit()
    pulled = _pod_image(kube, namespace, future.run_id)
    assert result_or_cancel(future) == (humanize.__version__, "8,000")
    repository, _, digest = pulled.partition("@")
    assert repository == environment.registry and digest.startswith("sha256:")  # by digest, never by tag
    assert open_registry.manifest_status(f"{repository_path}/toolkit-env", digest) == 200
    assert stack.updates(environment.stack, settings.default_backend_url()) == 1

    again = report.preview().environment
    assert again.status == "cached" and again.reference == pulled
    future = report.submit()
    assert _pod_image(kube, namespace, future.run_id) == pulled
    assert result_or_cancel(future) == (humanize.__version__, "8,000")
    assert stack.updates(environment.stack, settings.default_backend_url()) == 1  # no second build, no second push

    pruned = manage.prune()
    assert [result.environment.stack for result in pruned if result.destroyed] == [environment.stack]
    assert pruned[0].left_in_registry is None
    assert open_registry.manifest_status(f"{repository_path}/toolkit-env", digest) == 404
    assert image_id(f"{environment.registry}:{environment.hash}") is None
    assert _env_stacks() == []


def test_an_image_missing_from_the_registry_fails_the_run_at_once_naming_the_registry(
    k8s_cluster, namespace, registries, repository_path
):
    open_registry = registries["open"]
    pool = save_pool(f"k8s-{namespace}", k8s_cluster, namespace, image_registry=f"{open_registry.host}/{repository_path}")

    def humanize_version() -> str:
        import humanize

        return humanize.__version__

    ask = {"packages": [HUMANIZE], "auto_packages": False}
    built = prepare(humanize_version, (), {}, pool, [ask])  # builds and pushes; runs nothing
    built.discard_bundle()
    reference = built.context.image
    repository, _, digest = reference.partition("@")
    assert open_registry.delete_manifest(f"{repository_path}/toolkit-env", digest) == 202  # behind the stack's back

    started = time.monotonic()
    with pytest.raises(JobFailedError) as failure:
        result_or_cancel(kubernetes(pool=pool, **ask)(humanize_version).submit(), PULL_ERROR_SECONDS)
    message = str(failure.value)
    assert f"could not pull its image {reference!r} from registry {open_registry.host!r}" in message
    assert "(ErrImagePull" in message or "(ImagePullBackOff" in message
    assert "toolkit env prune" in message
    elapsed = time.monotonic() - started
    print(f"the pull failure was reported {elapsed:.1f} s after the submission")  # shown with -rP
    assert elapsed < PULL_ERROR_SECONDS


def test_credentials_from_the_pool_push_and_pull_and_a_refusing_registry_keeps_its_image(
    k8s_cluster, namespace, registries, repository_path, monkeypatch
):
    locked = registries["locked"]
    monkeypatch.setenv(PASSWORD_ENV, locked.password)
    pool = save_pool(
        f"k8s-{namespace}", k8s_cluster, namespace,
        image_registry={"url": f"{locked.host}/{repository_path}", "username": locked.username,
                        "password_env": PASSWORD_ENV},
    )

    @kubernetes(pool=pool, packages=[HUMANIZE], auto_packages=False)
    def humanize_version() -> str:
        import humanize

        return humanize.__version__

    assert result_or_cancel(humanize_version.submit()) == "4.11.0"  # pushed with the pool's credentials, pulled with a pull Secret
    environment = humanize_version.preview().environment
    state = list((Path(settings.home()) / "state").rglob(f"{environment.stack}.json"))
    assert state and all(locked.password not in path.read_text() for path in state)  # a Pulumi secret there

    pruned = manage.prune()
    assert pruned[0].destroyed and _env_stacks() == []
    assert "refused to delete" in pruned[0].left_in_registry and "storage.delete.enabled" in pruned[0].left_in_registry
    repository, _, digest = environment.reference.partition("@")
    assert locked.manifest_status(f"{repository_path}/toolkit-env", digest) == 200  # the registry kept it


def test_a_registry_that_refuses_the_push_is_a_clear_error_before_any_run(
    k8s_cluster, namespace, registries, repository_path, monkeypatch
):
    locked = registries["locked"]
    pool = save_pool(f"k8s-{namespace}", k8s_cluster, namespace, image_registry=f"{locked.host}/{repository_path}")

    @kubernetes(pool=pool, packages=[HUMANIZE], auto_packages=False)
    def humanize_version() -> str:
        import humanize

        return humanize.__version__

    started = time.monotonic()
    with pytest.raises(ImagePushError) as refused:
        humanize_version()
    message = str(refused.value)
    assert f"image registry {locked.host!r}" in message and f"docker login {locked.host}" in message
    assert "Nothing of the run was provisioned" in message
    assert time.monotonic() - started < RUN_SECONDS

    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    save_pool(
        pool, k8s_cluster, namespace,
        image_registry={"url": f"{locked.host}/{repository_path}", "username": locked.username,
                        "password_env": PASSWORD_ENV},
    )
    with pytest.raises(ImagePushError, match=rf"check the user name 'toolkit' and the password in \${PASSWORD_ENV}"):
        humanize_version()
