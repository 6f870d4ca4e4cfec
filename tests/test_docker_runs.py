"""The docker target end to end: the real pulumi-docker provider on the local Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import toolkit
from tests.leaks import assert_nothing_left
from toolkit import docker, settings
from toolkit.errors import ConfigError, JobFailedError, RunCancelledError
from toolkit.futures import wait_for_teardowns
from toolkit.toolchain.runner_image import BASE_IMAGE

pytestmark = [pytest.mark.engine, pytest.mark.docker]


@pytest.fixture(autouse=True)
def _nothing_left_after_each_test():
    yield
    wait_for_teardowns()
    assert_nothing_left()
    volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout.split()
    assert not [v for v in volumes if "toolkit" in v]


def _inspect(name: str) -> dict:
    """``docker inspect`` of a container, {} if it does not exist."""
    result = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    return json.loads(result.stdout)[0] if result.returncode == 0 else {}


@docker(mem_limit="256m")
def whoami(tag: str) -> dict:
    """Reports what the kernel enforces on the job, from inside it."""
    import os
    import socket

    print(f"job {tag} says hello", flush=True)
    try:
        open("/probe", "w").close()
        root_writable = True
    except OSError:
        root_writable = False
    status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
    mounts = {fields[1]: fields for fields in (line.split() for line in open("/proc/mounts"))}
    with open("/tmp/probe", "w") as handle:  # the one writable place besides the run directory
        handle.write("x")
    limits = [p for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes") if os.path.exists(p)]
    return {
        "uid": os.getuid(),
        "host": socket.gethostname(),
        "root_writable": root_writable,
        "cap_eff": status["CapEff"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "memory_limit": int(open(limits[0]).read()),
        "run_key_in_env": "TOOLKIT_RUN_KEY" in os.environ,
        "tmp_mount": (mounts["/tmp"][2], sorted(mounts["/tmp"][3].split(","))) if "/tmp" in mounts else None,
    }


def test_success_runs_hardened_and_streams_output():
    value = whoami("a")
    assert value["uid"] == 1000 and value["root_writable"] is False
    assert value["cap_eff"] == "0000000000000000" and value["no_new_privs"] == "1"
    assert value["memory_limit"] == 256 * 1024 * 1024
    assert value["run_key_in_env"] is False  # the runner takes it out before calling the function
    fstype, options = value["tmp_mount"]  # the README's size-capped /tmp tmpfs
    assert fstype == "tmpfs" and {"rw", "nosuid", "nodev", f"size={256 * 1024}k"} <= set(options)


def test_output_streams_into_the_future_logs():
    future = whoami.submit("b")
    future.result()
    assert "job b says hello" in future.logs()


def test_remote_exception_reraises_with_type():
    @docker
    def fail():
        raise KeyError("missing-key")

    with pytest.raises(KeyError, match="missing-key") as info:
        fail()
    assert "in fail" in info.value.remote_traceback


def test_oom_kill_is_reported_and_names_mem_limit():
    @docker(mem_limit="64m")
    def hog():
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))

    with pytest.raises(JobFailedError, match=r"exceeding its memory limit \(mem_limit='64m'\)"):
        hog()


def test_cancel_mid_run_stops_the_container_and_destroys_everything():
    @docker
    def forever():
        print("started", flush=True)
        time.sleep(600)

    future = forever.submit()
    try:
        deadline = time.monotonic() + 120
        while "started" not in future.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert future.state == "running"
        assert _inspect(f"toolkit-{future.run_id}")["State"]["Running"] is True
    finally:
        assert future.cancel(timeout=120)
    with pytest.raises(RunCancelledError):
        future.result()
    assert _inspect(f"toolkit-{future.run_id}") == {}


def test_six_concurrent_runs():
    futures = [whoami.submit(str(i)) for i in range(6)]
    results = [future.result(timeout=600) for future in futures]
    assert len({r["host"] for r in results}) == 6
    assert all(f"job {i} says hello" in futures[i].logs() for i in range(6))


def test_preview_shows_the_container_and_creates_nothing():
    plan = whoami.with_options(env={"TOKEN": toolkit.secret("p@ss"), "MODE": "fast"}, cpus=0.5).preview("x")
    container = next(c for c in plan.changes if c.type == "docker:index/container:Container")
    assert container.op == "create"
    assert container.inputs["image"] == settings.runner_image()
    assert container.inputs["memory"] == 256 and container.inputs["cpus"] == "0.5"
    assert container.inputs["readOnly"] is True and container.inputs["user"] == "1000:1000"
    assert any(v["containerPath"] == "/toolkit-run" for v in container.inputs["volumes"])
    assert plan.job["env"] == {"TOKEN": "[secret]", "MODE": "fast"}
    assert container.inputs["envs"] == ["MODE=fast"]  # `docker inspect` will show no secret
    storage = next(c for c in plan.changes if c.name == "run-directory")
    assert storage.inputs["secrets"] == {"TOKEN": "[secret]", "TOOLKIT_RUN_KEY": "[secret]"}
    assert "p@ss" not in plan.to_json() and "p@ss" not in str(plan)
    assert [(plugin.name, plugin.version, plugin.present) for plugin in plan.plugins] == [("docker", "5.2.0", True)]
    assert "Provider plugins:\n    docker v5.2.0: present (" in str(plan)
    containers = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=toolkit-run={plan.run_id}"],
                                capture_output=True, text=True, check=True)
    assert containers.stdout == ""  # none for this run (other sessions share the engine)


def test_missing_image_fails_before_provisioning_with_how_to_build():
    with pytest.raises(ConfigError, match=r"image 'no-such-image:1' .* not in the local Docker engine; build it"):
        whoami.with_options(image="no-such-image:1").submit("x")


def test_image_without_the_toolkit_says_how_to_build_one():
    with pytest.raises(JobFailedError, match=r"lacks the toolkit\. Build your image FROM 'toolkit-runner"):
        whoami.with_options(image=BASE_IMAGE)("x")


def test_root_user_is_refused():
    with pytest.raises(ConfigError, match="must not be root"):
        whoami.with_options(user="0:0").submit("x")


def test_unknown_variable_suggests_the_docker_name():
    with pytest.raises(ConfigError, match="Did you mean 'mem_limit'"):
        whoami.with_options(memory_limit="1g").submit("x")
    assert not os.path.exists(os.path.join(os.environ["TOOLKIT_HOME"], "work")) or not os.listdir(
        os.path.join(os.environ["TOOLKIT_HOME"], "work")
    )
