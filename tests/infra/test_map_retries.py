"""``retries`` on a map, valid on every target: by the platform per task where it retries by itself, else by the engine."""

from __future__ import annotations

from typing import Any

import pytest

from toolkit import preparation
from toolkit.fanout.prepare import prepare_map
from toolkit.pools.registry import PoolRegistry, WorkPool

pytestmark = pytest.mark.docker
"""The environment's plan for a remote target asks the Docker engine whether the base image is here."""

REQUIRED: dict[str, dict[str, Any]] = {
    "ecs": {"image": "img", "cluster": "c", "subnets": ["subnet-1"], "region": "eu-west-1"},
    "vertex_ai": {"image": "img", "project": "proj-1"},
    "azure_container_instance": {"image": "img", "resource_group": "rg"},
    "cloud_run": {"image": "img", "project": "proj-1"},
}


@pytest.fixture(autouse=True)
def _plugins_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cloud providers' plugins cannot be had here; the check for them is not what is tested."""
    monkeypatch.setattr(preparation.plugins, "require", lambda *_args, **_kwargs: [])


def _prepare(target: str, retries: int):  # noqa: ANN202 - a PreparedRun
    pool = target.replace("_", "-") + "-maps"
    PoolRegistry().save(WorkPool(name=pool, type=target), overwrite=True)
    layer = {**REQUIRED[target], "retries": retries}
    return prepare_map(lambda x: x, [range(3)], pool, [layer], target, build=False)


@pytest.mark.parametrize("target", ["ecs", "vertex_ai", "azure_container_instance"])
def test_retries_on_a_map_of_claiming_workers_is_taken_for_the_engine_to_honour(target: str) -> None:
    """Workers that claim items: the engine retries the items a dead job left, on a fresh job."""
    prepared = _prepare(target, retries=2)
    try:
        assert prepared.variables["retries"] == 2 and prepared.context.fanout.count == 3
        assert prepared.target.native_retries is None
    finally:
        prepared.discard_bundle()


def test_cloud_run_retries_each_items_task_itself() -> None:
    prepared = _prepare("cloud_run", retries=2)
    try:
        assert prepared.variables["max_retries"] == 2 and prepared.context.fanout.count == 3
    finally:
        prepared.discard_bundle()
