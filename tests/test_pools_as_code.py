"""Pools as code: the top-level Pulumi project through the real engine, `toolkit pool diff` and `export`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.leaks import run_stacks
from tests.pulumi_cli import PulumiCli, make_cli
from toolkit import process
from toolkit.errors import ConfigError
from toolkit.futures import wait_for_teardowns
from toolkit.pools.as_code import template_with_defaults
from toolkit.pools.diff import FieldChange, field_changes, preview_template_change
from toolkit.pools.export import export_program
from toolkit.pools.registry import PoolRegistry, WorkPool

REPO = Path(__file__).resolve().parent.parent
OMP_PATH = "base_job_template.variables.properties.env.default.OMP_NUM_THREADS"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> PulumiCli:
    return make_cli(tmp_path_factory.mktemp("pools-as-code"))


def _copy_project(source: Path, target: Path) -> Path:
    """A copy of a pools-as-code project (its Pulumi.yaml and stacks/), so stack init edits no tracked file."""
    target.mkdir(parents=True)
    shutil.copy(source / "Pulumi.yaml", target / "Pulumi.yaml")
    shutil.copytree(source / "stacks", target / "stacks", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _stored(url: Path) -> list[str]:
    return sorted(path.stem for path in url.glob("*.json")) if url.exists() else []


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


@process(pool="cpu-batch")
def probe() -> tuple[str, int]:
    return os.environ["OMP_NUM_THREADS"], os.nice(0)


@pytest.mark.engine
def test_top_level_project_previews_publishes_updates_and_destroys_pools(
    cli: PulumiCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _copy_project(REPO, tmp_path / "project")
    cli.run("stack", "init", "dev", cwd=project)
    cli.run("config", "set", "toolkit:registryUrl", "registry", cwd=project)  # relative: from the project root
    registry = project / "registry"

    preview = cli.run("preview", cwd=project).output
    assert "+ 3 to create" in preview and "cpu-batch" in preview and "docker-small" in preview
    assert _stored(registry) == []

    cli.run("up", "--yes", cwd=project)
    assert _stored(registry) == ["cpu-batch", "docker-small"]
    batch = PoolRegistry(str(registry)).get("cpu-batch")
    properties = batch.base_job_template["variables"]["properties"]
    assert properties["timeout"]["default"] == 900  # stacks/Pulumi.dev.yaml's override
    assert properties["env"]["default"] == {"OMP_NUM_THREADS": "4"}
    small = PoolRegistry(str(registry)).get("docker-small")
    assert small.base_job_template["variables"]["properties"]["mem_limit"]["default"] == "1g"

    _edit(project / "stacks" / "batch.py", '"OMP_NUM_THREADS": "4"', '"OMP_NUM_THREADS": "8"')
    preview = cli.run("preview", cwd=project).output
    assert "~ 1 to update" in preview
    assert f"pool 'cpu-batch': ~ {OMP_PATH}: '4' -> '8'" in preview
    assert 'OMP_NUM_THREADS: "4" => "8"' in cli.run("preview", "--diff", cwd=project).output
    assert PoolRegistry(str(registry)).get("cpu-batch") == batch  # a preview publishes nothing

    cli.run("up", "--yes", cwd=project)
    published = PoolRegistry(str(registry)).get("cpu-batch")
    assert published.base_job_template["variables"]["properties"]["env"]["default"] == {"OMP_NUM_THREADS": "8"}
    changes = PoolRegistry(str(registry)).changes("cpu-batch")  # the pool's history (the dashboard's pool page)
    assert [change["op"] for change in changes] == ["create", "update"]
    assert changes[-1]["document"] == json.loads(published.to_document())

    # A decorated function runs on the published pool, with its template's defaults.
    monkeypatch.setenv("TOOLKIT_POOLS_URL", str(registry))
    base_niceness = os.nice(0)
    assert probe() == ("8", min(base_niceness + 10, 19))
    wait_for_teardowns()
    assert run_stacks() == []

    # Another registry for the stack moves the pools: published there, removed here.
    cli.run("config", "set", "toolkit:registryUrl", str(tmp_path / "moved"), cwd=project)
    assert "2 to replace" in cli.run("preview", cwd=project).output
    cli.run("up", "--yes", cwd=project)
    assert _stored(registry) == [] and _stored(tmp_path / "moved") == ["cpu-batch", "docker-small"]

    destroy = cli.run("destroy", "--yes", cwd=project).output
    assert "3 deleted" in destroy
    assert _stored(tmp_path / "moved") == []


BROKEN_PLACEHOLDER = '''

def broken(config):
    template = template_with_defaults("docker")
    template["job_configuration"]["gpus"] = "{{ gpu_count }}"
    return [WorkPoolResource("gpu", type="docker", base_job_template=template)]
'''

BROKEN_SCHEMA = '''

def broken(config):
    template = template_with_defaults("docker")
    template["variables"]["properties"]["image"]["type"] = "strnig"
    return [WorkPoolResource("gpu", type="docker", base_job_template=template)]
'''


@pytest.mark.engine
@pytest.mark.parametrize(
    ("stack", "module_text", "message"),
    [
        ("placeholder", BROKEN_PLACEHOLDER, "placeholder(s) {{ gpu_count }} in 'job_configuration' name no variable"),
        ("schema", BROKEN_SCHEMA, "'variables' is not a valid JSON schema at properties/image/type"),
    ],
    ids=["placeholder-without-variable", "invalid-json-schema"],
)
def test_a_broken_template_fails_preview_and_publishes_nothing(
    cli: PulumiCli, tmp_path: Path, stack: str, module_text: str, message: str
) -> None:
    project = _copy_project(REPO, tmp_path / "project")
    stacks = project / "stacks"
    (stacks / "containers.py").write_text((stacks / "containers.py").read_text() + module_text)
    _edit(stacks / "__main__.py", "*containers.declare(config)]",
          "*containers.declare(config), *containers.broken(config)]")
    cli.run("stack", "init", stack, cwd=project)
    cli.run("config", "set", "toolkit:registryUrl", str(tmp_path / "registry"), cwd=project)

    preview = cli.run("preview", cwd=project, check=False)
    assert preview.returncode != 0
    assert "resource 'gpu' has a problem: pool 'gpu': " + message in preview.output
    assert "Traceback" not in preview.output

    up = cli.run("up", "--yes", cwd=project, check=False)
    assert up.returncode != 0 and message in up.output
    assert _stored(tmp_path / "registry") == []  # not even the valid pools


@pytest.mark.engine
def test_export_writes_a_program_that_adopts_the_pools_unchanged(cli: PulumiCli, tmp_path: Path) -> None:
    registry = PoolRegistry(str(tmp_path / "registry"))
    by_hand = [
        WorkPool(name="nightly", type="process", description="made with toolkit pool create",
                 base_job_template=template_with_defaults("process", timeout=120, env={"A": "1"})),
        WorkPool(name="shared-docker", type="docker",
                 storage={"url": str(tmp_path / "runs"), "mode": "shared-prefix"}),
    ]
    for pool in by_hand:
        registry.save(pool)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: exported\nruntime: python\nmain: stacks/\n")
    written = export_program(registry, project / "stacks")
    assert sorted(path.name for path in written) == ["__main__.py", "exported_pools.py"]
    with pytest.raises(ConfigError, match="exists; pass --force"):
        export_program(registry, project / "stacks")

    cli.run("stack", "init", "dev", cwd=project)
    cli.run("config", "set", "toolkit:registryUrl", registry.url, cwd=project)
    assert "+ 3 to create" in cli.run("preview", cwd=project).output
    cli.run("up", "--yes", cwd=project)
    for pool in by_hand:  # the same pools, but for `default: None` entries, which Pulumi does not carry
        assert _without_nulls(registry.get(pool.name).model_dump()) == _without_nulls(pool.model_dump())
    assert "3 unchanged" in cli.run("preview", cwd=project).output
    cli.run("destroy", "--yes", cwd=project)
    assert _stored(tmp_path / "registry") == []


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


@pytest.mark.engine
def test_example_project_publishes_its_pools(cli: PulumiCli, tmp_path: Path) -> None:
    project = _copy_project(REPO / "examples" / "pools_as_code", tmp_path / "example")
    cli.run("stack", "init", "dev", cwd=project)
    assert "+ 3 to create" in cli.run("preview", cwd=project).output
    cli.run("up", "--yes", cwd=project)
    registry = PoolRegistry(str(project / ".registry" / "dev"))  # stacks/Pulumi.dev.yaml's relative URL
    assert _stored(project / ".registry" / "dev") == ["etl", "ml-train"]
    assert registry.get("ml-train").base_job_template["variables"]["properties"]["mem_limit"]["default"] == "2g"
    assert registry.get("etl").base_job_template["variables"]["required"] == ["dataset"]
    cli.run("destroy", "--yes", cwd=project)
    assert _stored(project / ".registry" / "dev") == []


def test_field_changes_name_the_changed_leaves() -> None:
    old = {"variables": {"properties": {"memory": {"default": "8Gi"}, "gpu": {"type": "string"}}},
           "job_configuration": {"containers": [{"image": "a"}], "args": ["x"]}}
    new = {"variables": {"properties": {"memory": {"default": "16Gi"}, "cpu": {"type": "string"}}},
           "job_configuration": {"containers": [{"image": "b"}], "args": ["x", "y"]}}
    assert field_changes(old, new) == [
        FieldChange("~", "variables.properties.memory.default", "8Gi", "16Gi"),
        FieldChange("-", "variables.properties.gpu", old={"type": "string"}),
        FieldChange("+", "variables.properties.cpu", new={"type": "string"}),
        FieldChange("~", "job_configuration.containers[0].image", "a", "b"),
        FieldChange("~", "job_configuration.args", ["x"], ["x", "y"]),
    ]
    assert field_changes(old, old) == []


def test_pool_diff_previews_a_template_change_without_writing(tmp_path: Path) -> None:
    registry = PoolRegistry(str(tmp_path / "registry"))
    registry.save(WorkPool(name="batch", type="process"))
    before = (tmp_path / "registry" / "batch.json").read_text()
    template_file = tmp_path / "template.json"
    template_file.write_text(json.dumps(template_with_defaults("process", timeout=600)))

    _, changes = preview_template_change(registry, "batch", template_file)
    assert [str(change) for change in changes] == [
        "~ base_job_template.variables.properties.timeout.default: None -> 600"
    ]
    assert (tmp_path / "registry" / "batch.json").read_text() == before

    cli = Path(sys.executable).parent / "toolkit"
    env = {**os.environ, "TOOLKIT_POOLS_URL": registry.url}
    shown = subprocess.run([str(cli), "pool", "diff", "batch", "--template", str(template_file)],
                           capture_output=True, text=True, env=env, check=True)
    assert "1 field change(s)" in shown.stdout and "timeout.default: None -> 600" in shown.stdout

    template_file.write_text(json.dumps({"job_configuration": {"x": "{{ nope }}"}, "variables": {"type": "object"}}))
    failed = subprocess.run([str(cli), "pool", "diff", "batch", "--template", str(template_file)],
                            capture_output=True, text=True, env=env)
    assert failed.returncode == 1 and "placeholder(s) {{ nope }}" in failed.stderr


def test_template_with_defaults_rejects_unknown_variables_and_invalid_values() -> None:
    with pytest.raises(ConfigError, match=r"'memroy'.*Valid: .*mem_limit"):
        template_with_defaults("docker", memroy="2g")
    with pytest.raises(ConfigError, match="default 'two' for 'docker' variable 'cpus' is invalid"):
        template_with_defaults("docker", cpus="two")
    template = template_with_defaults("docker", mem_limit="2g")
    assert template["variables"]["properties"]["mem_limit"]["default"] == "2g"


def test_template_with_defaults_checks_a_variable_whose_schema_refers_to_the_templates_definitions() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    template = template_with_defaults("kubernetes", tolerations=[toleration])  # items: {"$ref": "#/$defs/Toleration"}
    assert template["variables"]["properties"]["tolerations"]["default"] == [toleration]
    with pytest.raises(ConfigError, match="default .* for 'kubernetes' variable 'tolerations' is invalid"):
        template_with_defaults("kubernetes", tolerations=[{"key": 1}])
