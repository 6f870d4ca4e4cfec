"""The ``toolkit`` command line, run as users run it (a subprocess), against real stacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left


def toolkit(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


JOBS = textwrap.dedent(
    """
    import time
    from toolkit import process

    def add(a, b):
        print("adding", a, b)
        return a + b

    @process(env={"MODE": "decorated"})
    def mode():
        import os
        return os.environ["MODE"]

    def sleepy():
        print("sleeping", flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.py"
    path.write_text(JOBS)
    return path


@pytest.mark.engine
@pytest.mark.docker
def test_doctor_reports_every_component_and_exits_zero_when_healthy(tmp_path):
    # A home of its own: pools other tests register (cloud targets whose plugins cannot exist here) would
    # rightly make doctor report those plugins missing.
    result = toolkit("doctor", "--json", env={"TOOLKIT_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout
    components = {check["component"]: check for check in json.loads(result.stdout)}
    for name in ("Pulumi CLI", "Python language host", "dynamic provider shim", "plugin docker",
                 "plugin kubernetes", "Docker engine", "runner image", "state backend", "pool registry",
                 "policy packs"):
        assert components[name]["ok"], components[name]
    assert components["plugin docker"]["detail"].endswith("pools: local-docker")
    assert components["plugin mode"]["detail"].startswith(("online: ", "offline: "))


def test_doctor_reports_a_stopped_engine_and_a_missing_plugin_with_the_fix(tmp_path):
    # An empty plugin cache and toolkit cache (whose own builds the engine would find on PATH too).
    result = toolkit("doctor", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PULUMI_HOME": str(tmp_path),
                                    "TOOLKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    engine = next(i for i, line in enumerate(lines) if "Docker engine" in line)
    plugin = next(i for i, line in enumerate(lines) if "plugin docker" in line)
    assert "MISSING" in lines[engine] and "fix: toolkit toolchain install" in lines[engine + 1]
    assert "MISSING" in lines[plugin] and "not in the plugin cache" in lines[plugin]
    assert "fix: toolkit toolchain install" in lines[plugin + 1]


def test_pool_lifecycle_and_default_template(tmp_path):
    template = json.loads(toolkit("pool", "default-template", "process").stdout)
    assert set(template) == {"job_configuration", "variables"}
    template["variables"]["properties"]["env"]["default"] = {"TEAM": "ml"}
    (tmp_path / "template.json").write_text(json.dumps(template))
    created = toolkit("pool", "create", "cli-pool", "--type", "process", "--template", str(tmp_path / "template.json"))
    assert created.returncode == 0, created.stderr
    listed = json.loads(toolkit("pool", "ls", "--json").stdout)
    assert {"cli-pool", "local-process", "local-docker"} <= {pool["name"] for pool in listed}
    shown = json.loads(toolkit("pool", "show", "cli-pool").stdout)
    assert shown["base_job_template"]["variables"]["properties"]["env"]["default"] == {"TEAM": "ml"}
    again = toolkit("pool", "create", "cli-pool", "--type", "process")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert toolkit("pool", "delete", "cli-pool").returncode == 0
    missing = toolkit("pool", "show", "cli-pool")
    assert missing.returncode == 1 and "work pool 'cli-pool' not found" in missing.stderr


def test_pool_create_with_guardrails(tmp_path):
    pack = Path(__file__).resolve().parent.parent / "examples" / "policy_pack"
    created = toolkit("pool", "create", "guarded-cli", "--type", "process", "--policy-pack", os.path.relpath(pack),
                      "--policy-pack", "registry:team", "--max-concurrent-runs", "3",
                      "--secrets-provider", "awskms://alias/runs?region=eu-west-1")
    assert created.returncode == 0, created.stderr
    shown = json.loads(toolkit("pool", "show", "guarded-cli").stdout)
    assert shown["policy_packs"] == [str(pack), "registry:team"]  # relative paths resolved
    assert (shown["max_concurrent_runs"], shown["secrets_provider"]) == (3, "awskms://alias/runs?region=eu-west-1")
    assert toolkit("pool", "delete", "guarded-cli").returncode == 0
    bad = toolkit("pool", "create", "bad-pack", "--type", "process", "--policy-pack", str(tmp_path))
    assert bad.returncode == 1 and "has no PulumiPolicy.yaml" in bad.stderr
    zero = toolkit("pool", "create", "bad-limit", "--type", "process", "--max-concurrent-runs", "0")
    assert zero.returncode == 1 and "max_concurrent_runs" in zero.stderr


@pytest.mark.engine
def test_run_preview_and_runs(jobs):
    ran = toolkit("run", f"{jobs}:add", "--pool", "local-process", "--arg", "2", "--arg", "40", "--json")
    assert ran.returncode == 0, ran.stderr
    document = json.loads(ran.stdout)
    assert document["result"] == 42 and document["state"] == "completed"
    assert "adding 2 40" in ran.stderr  # job output goes to stderr with --json
    plain = toolkit("run", f"{jobs}:mode", "-v", "env.MODE=cli")
    assert plain.returncode == 0 and plain.stdout.strip() == "'cli'"
    preview = toolkit("preview", f"{jobs}:add", "--pool", "local-process", "--arg", "1", "--arg", "2", "--json")
    plan = json.loads(preview.stdout)
    assert {c["type"] for c in plan["changes"]} >= {"toolkit:index:LocalProcess"}
    runs = json.loads(toolkit("runs", "ls", "--json").stdout)
    record = next(r for r in runs if r["run_id"] == document["run_id"])
    assert record["torn_down"] and record["state"] == "completed"
    assert toolkit("runs", "logs", document["run_id"]).stdout == "adding 2 40\n"
    assert "no leaked run stacks" in toolkit("gc", "--dry-run").stderr
    assert_nothing_left()


@pytest.mark.engine
def test_bad_variable_and_remote_error_exit_nonzero_with_a_clear_message(jobs):
    typo = toolkit("run", f"{jobs}:add", "--pool", "local-process", "-v", "evn.X=1", "--arg", "1", "--arg", "2")
    assert typo.returncode == 1
    assert typo.stderr.strip().startswith("error: unknown job variable 'evn.X'") and "Did you mean 'env.X'?" in typo.stderr
    assert "Traceback" not in typo.stderr
    failing = toolkit("run", f"{jobs}:add", "--pool", "local-process", "--arg", "1", "--arg", '"x"')
    assert failing.returncode == 1 and "TypeError" in failing.stderr and "in add" in failing.stderr


@pytest.mark.engine
def test_runs_cancel_from_another_process(jobs):
    runner = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "run", f"{jobs}:sleepy", "--pool", "local-process"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        run_id = ""
        deadline = time.monotonic() + 120
        while not run_id and time.monotonic() < deadline:
            running = [r for r in json.loads(toolkit("runs", "ls", "--json").stdout) if r["state"] == "running"]
            run_id = running[0]["run_id"] if running else ""
            time.sleep(0.2)
        assert run_id, "the run never started"
        cancelled = toolkit("runs", "cancel", run_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancelled, stack destroyed" in cancelled.stderr
        assert runner.wait(timeout=120) == 1
        assert "was cancelled" in runner.stderr.read()
    finally:
        runner.kill()
    assert_nothing_left()
