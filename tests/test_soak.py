"""The chaos soak (``bench/soak.py``): a short one on the real engines loses no result and leaves nothing,
and its accounting, checked without an engine, counts a lost result as lost.

The short soak makes 50 calls while 5 faults hit them (every kind at least
once): a killed client, a killed job container, a Docker engine restart, a
full run-directory disk. It runs in a TOOLKIT_HOME of its own and cleans up
(clients killed, tmpfs unmounted, engine running, ``toolkit gc``) on every
path, a failed assertion in it too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_soak", BENCH / "soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


soak = _soak_module()


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.engine
def test_a_short_soak_loses_nothing_and_leaves_nothing():
    lines: list[str] = []
    data = soak.run_soak(calls=50, faults=5, seed=25, clients=3, max_seconds=300, log=lines.append)
    report = "\n".join([*lines, *soak.render({"data": data, "host": {"cores": 2}}, {})])
    assert set(data["faults"]) == set(soak.KINDS) and sum(data["faults"].values()) == 5, report
    assert data["faults_not_injected"] == [], report
    assert data["not_started"] == 0 and data.get("stopped_at_time_bound", 0) == 0, report
    assert data["lost"] == [], report
    assert data["left"] == {}, report
    assert data["gc"]["errors"] == [] and data["clients_crashed"] == [], report
    assert data["returned"] >= data["should_have_succeeded"] > 0, report


PLAN = [
    {"call": 0, "target": "docker", "map": False, "naps": [1.0]},
    {"call": 1, "target": "process", "map": True, "naps": [1.0, 1.0, 1.0]},
    {"call": 2, "target": "docker", "map": False, "naps": [1.0]},
    {"call": 3, "target": "process", "map": False, "naps": [1.0]},
    {"call": 4, "target": "docker", "map": False, "naps": [1.0]},
]


def test_the_accounting_tells_lost_results_from_excused_ones():
    """Call 0: its container killed once, returned. Call 1: its client killed. Call 2: the engine
    restarted while it provisioned, failed (excused, counted apart). Call 3: the disk filled while its
    job ran, failed: lost. Call 4: container killed three times with retries=2, failed (excused)."""
    states = {
        0: {"start": 10, "ended": 20, "run_id": "a", "outcome": "returned", "client": 0},
        1: {"start": 10, "run_id": "b", "client": 1},
        2: {"start": 30, "ended": 40, "run_id": "c", "outcome": "failed", "error": "ProvisionError: engine down"},
        3: {"start": 50, "ended": 60, "run_id": "d", "outcome": "failed", "error": "JobFailedError: no space"},
        4: {"start": 70, "ended": 80, "run_id": "e", "outcome": "failed", "error": "JobFailedError: killed"},
    }
    faults = [
        {"kind": "docker_kill", "run_id": "a", "t": 15, "until": 15},
        {"kind": "client_kill", "client": 1, "calls": [1], "t": 12, "until": 12},
        {"kind": "docker_restart", "t": 31, "until": 33},
        {"kind": "disk_full", "t": 55, "until": 58},
        *({"kind": "docker_kill", "run_id": "e", "t": t, "until": t} for t in (72, 74, 76)),
    ]
    running = {"a": 12, "c": 35, "d": 52, "e": 71}
    data = soak.account(PLAN, states, faults, running, retries=2)
    assert [(j["call"], j["hits"]) for j in data["lost"]] == [(3, {"provisioning": 0, "job": 1})]
    assert data["returned"] == 1 and data["retried_and_returned"] == 1
    assert data["killed_with_client"] == 1
    assert data["hit_while_provisioning"]["calls"] == 1
    assert data["hit_while_provisioning"]["failed"][0]["call"] == 2
    assert data["more_faults_than_retries"] == {"calls": 1, "failed": 1}
    assert data["should_have_succeeded"] == 2
    assert data["faults"] == {"docker_kill": 4, "client_kill": 1, "docker_restart": 1, "disk_full": 1}


def test_a_wrong_value_is_lost_whatever_hit_it():
    states = {0: {"start": 1, "ended": 2, "run_id": "a", "outcome": "wrong"}}
    faults = [{"kind": "docker_restart", "t": 0.5, "until": 1.5}]
    assert [j["call"] for j in soak.account(PLAN[:1], states, faults, {}, retries=2)["lost"]] == [0]


def test_the_plan_and_the_faults_come_from_the_seed():
    assert soak.plan_calls(40, 7, ("process", "docker")) == soak.plan_calls(40, 7, ("process", "docker"))
    faults = soak.plan_faults(5, 50, 7, soak.KINDS)
    assert sorted(f["due"] for f in faults) == [4, 12, 20, 28, 36]
    assert set(f["kind"] for f in faults) == set(soak.KINDS)


def test_the_section_renders_what_the_soak_counted():
    states = {3: {"start": 50, "ended": 60, "run_id": "d", "outcome": "failed", "error": "JobFailedError: no space"}}
    data = soak.account(PLAN, states, [{"kind": "disk_full", "t": 55, "until": 58}], {"d": 52}, retries=2)
    data.update(seed=1, clients=2, retries=2, map_items=3, targets=["process", "docker"], faults_requested=1,
                faults_not_injected=[], kinds=["client_kill", "docker_kill", "disk_full"],
                not_exercised=soak.NOT_EXERCISED, max_seconds=60, seconds=30, clients_crashed=[],
                gc={"exit": 0, "destroyed": 0, "errors": []}, left={})
    text = "\n".join(soak.render({"data": data, "host": {"cores": 2}}, {}))
    assert "| **results lost** | **1** |" in text and "| **left behind after gc** (" in text
    assert "lost: call 3 (process, run d), failed" in text and "Goal (500 calls, 50 faults: 0 lost, 0 left): **missed**" in text
    assert "docker_restart (not requested: `--kinds client_kill docker_kill disk_full`)" in text and "pod_delete" in text
