"""Real Prefect flows run remotely *as flows*: Prefect's engine in the job, states on a real Prefect server.

Client scripts run with the Prefect venv's interpreter (see conftest). The
process target runs jobs on that interpreter; docker jobs run in the runner
image plus Prefect installed from wheels downloaded on this host (the
``prefect_image`` fixture), until environments (issue 13) install detected
packages into job images by themselves.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left
from tests.prefect import harness
from tests.prefect.conftest import PrefectServer, PrefectVenv, run_client
from toolkit import settings

pytestmark = [pytest.mark.engine, pytest.mark.slow]

IMAGE_DOCKERFILE = """\
FROM {base}
USER root
COPY wheels /tmp/wheels
RUN /opt/toolkit/bin/pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \\
 && rm -rf /tmp/wheels
USER 1000:1000
"""


@pytest.fixture(scope="session")
def prefect_image(prefect_venv: PrefectVenv, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The runner image with Prefect (same cloudpickle and fsspec pins), built once per package set."""
    base = settings.runner_image()
    image = f"{base}-prefect"
    requirements = [f"prefect=={harness.PREFECT}", "cloudpickle==3.1.3", "fsspec==2026.7.0"]
    harness.ensure_image_with(
        prefect_venv.path, requirements, base, image, IMAGE_DOCKERFILE,
        tmp_path_factory.mktemp("prefect-image"), label="toolkit.test.prefect",
    )
    return image


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    assert_nothing_left()


FLOWS = textwrap.dedent(
    """
    import json
    from prefect import flow
    from toolkit import {target}

    attempts = []

    @{target}({options})
    @flow(name="{prefix}-doubles", retries=1, retry_delay_seconds=0, log_prints=True)
    def doubles(x):
        attempts.append(1)
        print(f"attempt {{len(attempts)}} in the job")
        if len(attempts) == 1:
            raise RuntimeError("transient: the engine retries this")
        return x * 2

    @{target}({options})
    @flow(name="{prefix}-fails")
    def fails():
        raise ValueError("flow failed on purpose")

    outcome = {{"value": doubles(21)}}
    try:
        fails()
    except ValueError as exc:
        outcome["error"] = [type(exc).__name__, str(exc)]
    print(json.dumps(outcome))
    """
)


def _check_states(server: PrefectServer, prefix: str) -> None:
    [done] = server.flow_runs(f"{prefix}-doubles")
    assert done["state_type"] == "COMPLETED" and done["run_count"] == 2, done
    [failed] = server.flow_runs(f"{prefix}-fails")
    assert failed["state_type"] == "FAILED", failed


def test_flow_on_process_reports_completed_and_failed_to_the_server(
    prefect_venv: PrefectVenv, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    script = FLOWS.format(target="process", options="", prefix="proc")
    outcome = run_client(prefect_venv, script, tmp_path, env=prefect_server.env).outcome
    assert outcome == {"value": 42, "error": ["ValueError", "flow failed on purpose"]}
    _check_states(prefect_server, "proc")


@pytest.mark.docker
def test_flow_on_docker_reports_completed_and_failed_to_the_server(
    prefect_venv: PrefectVenv, prefect_server: PrefectServer, prefect_image: str, tmp_path: Path
) -> None:
    script = FLOWS.format(target="docker", options=f"image={prefect_image!r}", prefix="dock")
    outcome = run_client(prefect_venv, script, tmp_path, env=prefect_server.env).outcome
    assert outcome == {"value": 42, "error": ["ValueError", "flow failed on purpose"]}
    _check_states(prefect_server, "dock")


def test_flow_runs_without_a_server_in_prefects_ephemeral_mode(prefect_venv: PrefectVenv, tmp_path: Path) -> None:
    script = FLOWS.format(target="process", options="", prefix="alone")
    outcome = run_client(prefect_venv, script, tmp_path).outcome  # no PREFECT_API_URL anywhere
    assert outcome == {"value": 42, "error": ["ValueError", "flow failed on purpose"]}


SEED_DECORATOR = """
{import_line}
from prefect import flow

@kubernetes(
    work_pool_name="{pool}",
    memory=64000,
)
@flow
def my_k8s_flow():
    return "hello"

future = my_k8s_flow() # Runs in the "{pool}" work pool
print(future.result())  # prints "hello"
"""

SEED_WORKER = """
{import_line}
from prefect import flow

@flow
def my_k8s_flow():
    return "hello"

with KubernetesWorker(
    work_pool_name="{pool}"
) as worker:
    future = worker.submit(my_k8s_flow, job_variables={{"memory": 64000}})
    print(future.result())  # prints "hello"
"""


@pytest.mark.docker
@pytest.mark.parametrize("seed", [SEED_DECORATOR, SEED_WORKER], ids=["decorator", "worker"])
def test_seed_examples_run_on_local_docker_with_the_import_line_changed(
    seed: str, prefect_venv: PrefectVenv, prefect_server: PrefectServer, prefect_image: str, tmp_path: Path
) -> None:
    """The seed's code verbatim but its import line (the docker forms under the seed's names) and pool name."""
    from toolkit.pools import PoolRegistry, WorkPool

    pool = WorkPool(name="prefect-seed-docker", type="docker")
    pool.base_job_template["variables"]["properties"]["image"]["default"] = prefect_image
    PoolRegistry().save(pool, overwrite=True)
    import_line = "from toolkit.prefect import docker as kubernetes, DockerWorker as KubernetesWorker"
    script = seed.format(import_line=import_line, pool=pool.name) + '\nprint(\'{"ok": true}\')\n'
    run = run_client(prefect_venv, script, tmp_path, env=prefect_server.env)
    assert run.outcome == {"ok": True}
    assert "hello\n" in run.stdout
    [newest] = prefect_server.flow_runs("my-k8s-flow")[:1]
    assert newest["state_type"] == "COMPLETED"
