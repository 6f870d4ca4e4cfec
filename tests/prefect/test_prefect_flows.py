"""Real Prefect flows run remotely *as flows*: Prefect's engine in the job, states on a real Prefect server.

Client scripts run with the Prefect venv's interpreter (see fixtures), so
Prefect reaches each job the way any package does: detected in the pickled
flow and found in the base (process: the job runs that interpreter) or built
into the call's environment image (docker: ``toolkit-env:<hash>`` FROM the
runner image, from wheels downloaded here; built once per test session and
shared by every docker test below, which all use the same packages).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left
from tests.prefect.fixtures import PrefectServer, PrefectVenv, run_client
from tests.prefect.seed import FLOW_NAME, SEEDS, seed_script

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    assert_nothing_left()


TEAM_FLOWS = textwrap.dedent(
    """
    from prefect import flow

    @flow(name="{prefix}-fails")
    def fails():
        raise ValueError("flow failed on purpose")
    """
)
"""A flow in the caller's own module next to the script: it travels by value, as ``__main__``'s do."""

FLOWS = textwrap.dedent(
    """
    import json
    from prefect import flow
    from toolkit import {target}
    import teamflows

    attempts = []

    @{target}()
    @flow(name="{prefix}-doubles", retries=1, retry_delay_seconds=0, log_prints=True)
    def doubles(x):
        attempts.append(1)
        print(f"attempt {{len(attempts)}} in the job")
        if len(attempts) == 1:
            raise RuntimeError("transient: the engine retries this")
        return x * 2

    fails = {target}()(teamflows.fails)

    outcome = {{"value": doubles(21)}}
    if {with_failure}:
        try:
            fails()
        except ValueError as exc:
            outcome["error"] = [type(exc).__name__, str(exc)]
    environment = doubles.preview(21).environment
    outcome["environment"] = environment and {{
        "status": environment.status,
        "reference": environment.reference,
        "prefect": [line.source for line in environment.packages if line.name == "prefect"],
    }}
    print(json.dumps(outcome))
    """
)


def _run_flows(
    venv: PrefectVenv, tmp_path: Path, target: str, prefix: str, env: dict[str, str] | None, with_failure: bool = True
) -> dict:
    (tmp_path / "teamflows.py").write_text(TEAM_FLOWS.format(prefix=prefix))
    script = FLOWS.format(target=target, prefix=prefix, with_failure=with_failure)
    outcome = run_client(venv, script, tmp_path, env=env).outcome
    assert outcome.pop("value") == 42
    if with_failure:
        assert outcome.pop("error") == ["ValueError", "flow failed on purpose"]
    return outcome["environment"]


def _check_states(server: PrefectServer, prefix: str) -> None:
    [done] = server.flow_runs(f"{prefix}-doubles")
    assert done["state_type"] == "COMPLETED" and done["run_count"] == 2, done
    [failed] = server.flow_runs(f"{prefix}-fails")
    assert failed["state_type"] == "FAILED", failed


def test_flow_on_process_reports_completed_and_failed_to_the_server(
    prefect_venv: PrefectVenv, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    environment = _run_flows(prefect_venv, tmp_path, "process", "proc", prefect_server.env)
    # Detected, and already there: the job runs the caller's interpreter, which has Prefect.
    assert environment["status"] == "base" and environment["reference"] == str(prefect_venv.python)
    _check_states(prefect_server, "proc")


@pytest.mark.docker
def test_flow_on_docker_gets_prefect_through_its_environment(
    prefect_venv: PrefectVenv, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    environment = _run_flows(prefect_venv, tmp_path, "docker", "dock", prefect_server.env)
    assert environment["status"] == "cached" and environment["reference"].startswith("toolkit-env:")
    assert environment["prefect"] == ["auto"]
    _check_states(prefect_server, "dock")


def test_flow_runs_without_a_server_in_prefects_ephemeral_mode(prefect_venv: PrefectVenv, tmp_path: Path) -> None:
    # No PREFECT_API_URL anywhere: the job's engine starts Prefect's temporary server (half a minute
    # or more here), so one flow, with a retry, is enough to show it.
    _run_flows(prefect_venv, tmp_path, "process", "alone", None, with_failure=False)


RELEASED_FORMS = textwrap.dedent(
    """
    import json
    from prefect import flow
    from prefect.states import State
    from toolkit.prefect import process

    @process(work_pool="local-process")
    @flow(name="forms-adds")
    def adds(x, y):
        return x + y

    @process(work_pool="local-process")
    @flow(name="forms-fails")
    def fails():
        raise ValueError("flow failed on purpose")

    outcome = {"value": repr(adds(1, 2))}
    try:
        fails()
    except ValueError as exc:
        outcome["error"] = [type(exc).__name__, str(exc)]

    state = adds(2, 3, return_state=True)
    outcome["state"] = [isinstance(state, State), state.type.value, state.result(), str(state.state_details.flow_run_id)]
    failed = fails(return_state=True)
    try:
        failed.result()
    except ValueError as exc:
        outcome["failed"] = [isinstance(failed, State), failed.type.value, str(exc), str(failed.state_details.flow_run_id)]

    future = adds.submit(y=4, x=3)
    outcome["future"] = [type(future).__name__, future.result()]
    print(json.dumps(outcome))
    """
)
"""Prefect 3's forms for a flow bound to infrastructure (``InfrastructureBoundFlow``): the call blocks and returns
the value or raises, ``return_state=True`` gives the run's ``State``, ``.submit()`` the future."""


def test_released_prefects_call_forms_value_exception_state_and_future(
    prefect_venv: PrefectVenv, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    outcome = run_client(prefect_venv, RELEASED_FORMS, tmp_path, env=prefect_server.env).outcome
    assert outcome["value"] == "3"
    assert outcome["error"] == ["ValueError", "flow failed on purpose"]
    is_state, state_type, result, run_id = outcome["state"]
    assert (is_state, state_type, result) == (True, "COMPLETED", 5)
    assert outcome["failed"][:3] == [True, "FAILED", "flow failed on purpose"]
    assert outcome["future"] == ["RunFuture", 7]
    # The states are those of the flow runs the server recorded, not made up on this side.
    runs = {run["id"]: run for run in prefect_server.flow_runs("forms-adds") + prefect_server.flow_runs("forms-fails")}
    assert runs[run_id]["state_type"] == "COMPLETED" and runs[run_id]["parameters"] == {"x": 2, "y": 3}
    assert runs[outcome["failed"][3]]["state_type"] == "FAILED"
    assert sorted(run["state_type"] for run in runs.values()) == ["COMPLETED"] * 3 + ["FAILED"] * 2


DETECT = textwrap.dedent(
    """
    import json, pickle
    import cloudpickle, jsonpatch
    from prefect import flow
    from toolkit.bundles import dump_call
    from toolkit.environments import detect
    import teamflows

    @flow(name="in-main")
    def in_main(x):
        return jsonpatch.make_patch({}, x)

    by_reference = flow(name="by-reference")(jsonpatch.make_patch)
    renamed = teamflows.fails.with_options(name="renamed")

    found = {}
    for name, fn in [("main", in_main), ("module", teamflows.fails), ("reference", by_reference),
                     ("with_options", renamed)]:
        used = detect.distributions_of(detect.referenced_modules(fn, (), {}))
        data = dump_call(fn, (), {})
        found[name] = {
            "distributions": sorted(used),
            "by_value": b"co_code" in data or b"_make_function" in data,
            "loads": type(pickle.loads(data)[0]).__name__,
        }
    print(json.dumps(found))
    """
)


def test_detection_maps_a_flows_imports_by_value_and_by_reference(prefect_venv: PrefectVenv, tmp_path: Path) -> None:
    """The walk sees through the ``Flow`` object: its class (Prefect) and its function, whether
    cloudpickle ships the function's code (``__main__``, a local module) or its name (an installed one)."""
    (tmp_path / "teamflows.py").write_text(TEAM_FLOWS.format(prefix="detect") + "\nimport jsonpatch  # unused\n")
    found = run_client(prefect_venv, DETECT, tmp_path).outcome
    assert found["main"] == {"distributions": ["jsonpatch", "prefect", "pydantic", "rich"], "by_value": True,
                             "loads": "Flow"}
    assert found["module"]["by_value"] and found["module"]["distributions"] == ["prefect", "pydantic", "rich"]
    assert found["reference"] == {"distributions": ["jsonpatch", "prefect", "pydantic", "rich"], "by_value": False,
                                  "loads": "Flow"}
    assert found["with_options"]["distributions"] == ["prefect", "pydantic", "rich"]


@pytest.mark.docker
@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_examples_run_on_local_docker_with_the_import_line_changed(
    seed: str, prefect_venv: PrefectVenv, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """The seed's code verbatim but its import line (the docker forms under the seed's names) and pool name;
    Prefect reaches the container through the same environment image as the flows above."""
    name = SEEDS[seed][1]
    docker_name = {"kubernetes": "docker", "KubernetesWorker": "DockerWorker"}[name]
    import_line = f"from toolkit.prefect import {docker_name} as {name}"
    before = prefect_server.flow_run_ids(FLOW_NAME)
    run = run_client(prefect_venv, seed_script(seed, import_line, "local-docker"), tmp_path, env=prefect_server.env)
    assert run.outcome == {"ok": True}
    assert "hello\n" in run.stdout
    [new] = [run for run in prefect_server.flow_runs(FLOW_NAME) if run["id"] not in before]
    assert new["state_type"] == "COMPLETED", new
