"""``toolkit gc``: collects stacks whose owner is gone or whose TTL passed, never a live owner's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.leaks import assert_nothing_left, run_stacks
from toolkit import gc, process
from toolkit.engine import RUN_TAG, RunTag
from toolkit.futures import wait_for_teardowns
from toolkit.workspace import owner_tag


def _tags(owner: str, age: float, ttl: float) -> dict[str, str]:
    run = RunTag(pool="p", function="f", owner=owner, created=time.time() - age, ttl=ttl)
    return {RUN_TAG: run.model_dump_json()}


def _dead_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:0"


def test_live_owner_within_ttl_is_kept():
    reason, age = gc.judge(_tags(owner_tag(os.getpid()), age=10, ttl=3600), time.time())
    assert reason is None and 9 < age < 12


def test_dead_owner_is_collected():
    reason, _ = gc.judge(_tags(_dead_owner(), age=10, ttl=3600), time.time())
    assert reason is not None and "is gone" in reason


def test_reused_pid_is_not_mistaken_for_the_owner():
    host, pid, _start = owner_tag(os.getpid()).split(":")
    reason, _ = gc.judge(_tags(f"{host}:{pid}:1", age=10, ttl=3600), time.time())
    assert reason is not None and "is gone" in reason


def test_expired_ttl_is_collected_even_for_a_live_owner():
    reason, _ = gc.judge(_tags(owner_tag(os.getpid()), age=7200, ttl=3600), time.time())
    assert reason is not None and "TTL of 3600s passed" in reason


def test_owner_on_another_host_is_judged_by_ttl_only():
    other = "some-other-host:1:1"
    assert gc.judge(_tags(other, age=10, ttl=3600), time.time())[0] is None
    assert "TTL" in gc.judge(_tags(other, age=7200, ttl=3600), time.time())[0]


def test_untagged_stack_is_collectable():
    reason, age = gc.judge({}, time.time())
    assert reason is not None and "no owner tag" in reason and age is None


def _listing(unreadable: str, stacks: dict[str, list[tuple[str, dict[str, str]]]]):
    """A backend listing that fails for ``unreadable`` as an S3 backend without credentials here would."""

    def listing(url: str) -> list[tuple[str, dict[str, str]]]:
        if url == unreadable:
            raise PermissionError("NoCredentialsError: Unable to locate credentials")
        return stacks[url]

    return listing


def test_an_unreadable_backend_is_reported_and_the_others_are_searched():
    readable, unreadable = "file:///readable", "s3://no-credentials-here"
    listing = _listing(unreadable, {readable: [("run-dead00000001", _tags(_dead_owner(), age=10, ttl=3600))]})
    search = gc.find_leaks(urls=[unreadable, readable], stacks=listing)
    assert [(leak.stack, leak.backend_url) for leak in search.leaks] == [("run-dead00000001", readable)]
    assert [(backend.backend_url, backend.error) for backend in search.unreadable] == [
        (unreadable, "PermissionError: NoCredentialsError: Unable to locate credentials")
    ]


def test_gc_collects_the_readable_backends_names_the_unreadable_one_and_fails(tmp_path: Path, monkeypatch):
    """``toolkit gc`` over two backends, one of which it cannot read: the other's leak is destroyed, the
    unreadable one is printed with its error (and in --json), and the exit status says not all was searched."""
    from toolkit.cli.main import app

    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path / "home"))
    readable, unreadable = f"file://{tmp_path / 'readable'}", f"file://{tmp_path / 'unreadable'}"
    stacks = {readable: [("run-dead00000002", _tags(_dead_owner(), age=10, ttl=3600))]}
    destroyed: list[tuple[str, str]] = []
    monkeypatch.setattr(gc, "backend_urls", lambda: [unreadable, readable])
    monkeypatch.setattr(gc, "list_run_stacks", _listing(unreadable, stacks))
    monkeypatch.setattr(gc, "destroy_stack", lambda stack, url: destroyed.append((stack, url)))

    shown = CliRunner().invoke(app, ["gc"])
    assert shown.exit_code == 1, shown.output
    assert destroyed == [("run-dead00000002", readable)]
    assert f"destroyed run-dead00000002 in {readable}" in shown.output
    assert f"could not read {unreadable}: PermissionError: NoCredentialsError" in shown.output

    destroyed.clear()
    shown = CliRunner().invoke(app, ["gc", "--json"])
    assert shown.exit_code == 1 and destroyed == [("run-dead00000002", readable)], shown.output
    document = json.loads(shown.stdout)
    assert [(leak["stack"], leak["destroyed"]) for leak in document["leaks"]] == [("run-dead00000002", True)]
    assert [backend["backend_url"] for backend in document["unreadable"]] == [unreadable]


@pytest.mark.engine
def test_gc_never_destroys_a_live_clients_running_stack():
    @process
    def slow():
        time.sleep(600)

    future = slow.submit()
    try:
        deadline = time.monotonic() + 60
        while future.state != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert future.state == "running"
        assert gc.collect().leaks == []
        assert run_stacks() == [f"run-{future.run_id}"]
        assert future.state == "running"
    finally:
        future.cancel(timeout=120)
    wait_for_teardowns()
    assert_nothing_left()


def test_staged_files_of_dead_owners_runs_go_and_the_rest_stay(tmp_path, monkeypatch):
    """A killed client's bundle and items (kept staged for its retries) go; a live client's stay, and so does
    a staged file whose run has no record yet (its client is preparing it)."""
    from toolkit import records, settings

    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path))
    staging = settings.home() / "staging"
    staging.mkdir()
    for run_id, owner in (("deadbeef0001", _dead_owner()), ("a11ve0000002", owner_tag(os.getpid()))):
        records.RunRecord(run_id=run_id, function="f", pool="p", target="process", stack=f"run-{run_id}",
                          backend_url="file:///nowhere", created=time.time(), owner_pid=0, owner=owner).save()
        (staging / f"{run_id}.tkb").write_bytes(b"bundle")
        (staging / f"{run_id}.items").mkdir()
        (staging / f"{run_id}.items" / "0").write_bytes(b"item")
    (staging / "unrecorded03.tkb").write_bytes(b"bundle")
    assert gc.sweep_staged() == ["deadbeef0001.items", "deadbeef0001.tkb"]
    assert sorted(path.name for path in staging.iterdir()) == ["a11ve0000002.items", "a11ve0000002.tkb", "unrecorded03.tkb"]


class _Labelled:
    """A target whose platform holds the jobs of ``jobs`` (by run id), as a Docker engine holds containers."""

    def __init__(self, jobs: dict[str, list[str]]) -> None:
        self.jobs, self.asked = jobs, []

    def stray_jobs(self, run_ids, remove):
        self.asked.append((sorted(run_ids), remove))
        found = {run_id: names for run_id, names in self.jobs.items() if run_id in run_ids}
        if remove:
            self.jobs = {run_id: names for run_id, names in self.jobs.items() if run_id not in run_ids}
        return found


def test_stray_jobs_of_dead_clients_runs_whose_stacks_are_gone_are_removed_and_no_others(tmp_path, monkeypatch):
    """Only the jobs of a run whose client died (before tearing it down itself) and whose stack is gone go: a
    live client's, one its own client tore down, and one whose stack is still there (a destroy failed) stay."""
    from toolkit import records
    from toolkit.infra import registry

    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path))
    backend = f"file://{tmp_path / 'state'}"
    runs = {"dead0000001a": _dead_owner(), "a11ve000001b": owner_tag(os.getpid()), "tornd000001c": _dead_owner(),
            "kept0000001d": _dead_owner()}
    for run_id, owner in runs.items():
        phases = [records.PhaseMark(phase="torn down", at=time.time())] if run_id.startswith("tornd") else []
        records.RunRecord(run_id=run_id, function="f", pool="local-docker", target="docker", stack=f"run-{run_id}",
                          backend_url=backend, created=time.time(), owner_pid=0, owner=owner, phases=phases).save()
    engine = _Labelled({run_id: [f"toolkit-{run_id}-0", f"toolkit-{run_id}-1"] for run_id in runs})
    monkeypatch.setattr(registry, "get_target", lambda name: engine)
    monkeypatch.setattr(gc, "list_run_stacks", lambda url: [("run-kept0000001d", {})])

    found, unsearched = gc.sweep_stray_jobs(set(), remove=False)
    assert [(stray.run_id, stray.names, stray.removed) for stray in found] == [
        ("dead0000001a", ["toolkit-dead0000001a-0", "toolkit-dead0000001a-1"], False)]
    assert unsearched == [] and sorted(engine.jobs) == sorted(runs)  # a dry run removes nothing
    assert engine.asked == [(["dead0000001a", "kept0000001d"], False)]  # neither the live one nor the torn down

    found, _ = gc.sweep_stray_jobs(set(), remove=True)
    assert [(stray.run_id, stray.removed) for stray in found] == [("dead0000001a", True)]
    assert sorted(engine.jobs) == ["a11ve000001b", "kept0000001d", "tornd000001c"]

    found, _ = gc.sweep_stray_jobs({(backend, "run-kept0000001d")}, remove=True)  # its stack destroyed now
    assert [stray.run_id for stray in found] == ["kept0000001d"]


def test_an_engine_that_does_not_answer_is_reported_not_taken_for_no_stray_jobs(tmp_path, monkeypatch):
    from toolkit import records
    from toolkit.infra import registry

    class Unreachable:
        def stray_jobs(self, run_ids, remove):
            raise ConnectionError("Cannot connect to the Docker daemon")

    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path))
    records.RunRecord(run_id="dead0000002a", function="f", pool="local-docker", target="docker",
                      stack="run-dead0000002a", backend_url=f"file://{tmp_path}", created=time.time(), owner_pid=0,
                      owner=_dead_owner()).save()
    monkeypatch.setattr(registry, "get_target", lambda name: Unreachable())
    assert gc.sweep_stray_jobs(set(), remove=True) == ([], ["docker: ConnectionError: Cannot connect to the Docker daemon"])


def test_a_dead_clients_workspace_without_a_stack_is_removed_and_a_live_ones_kept(tmp_path, monkeypatch):
    """A client killed before its stack existed (or after its own destroy removed it) leaves its Pulumi workspace
    directory with no stack for gc to destroy; gc removes it. A live client's, and one whose stack is there, stay."""
    import tempfile

    from toolkit import records

    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path))
    backend = f"file://{tmp_path / 'state'}"
    runs = {"dead0000003a": _dead_owner(), "a11ve000003b": owner_tag(os.getpid()), "kept0000003c": _dead_owner()}
    workspaces = {}
    for run_id, owner in runs.items():
        records.RunRecord(run_id=run_id, function="f", pool="local-process", target="process", stack=f"run-{run_id}",
                          backend_url=backend, created=time.time(), owner_pid=0, owner=owner).save()
        workspaces[run_id] = Path(tempfile.mkdtemp(prefix=f"toolkit-{run_id}-"))
    monkeypatch.setattr(gc, "list_run_stacks", lambda url: [("run-kept0000003c", {})])
    try:
        assert gc.sweep_workspaces(set()) == [str(workspaces["dead0000003a"])]
        assert [run_id for run_id, path in workspaces.items() if path.exists()] == ["a11ve000003b", "kept0000003c"]
    finally:
        for path in workspaces.values():
            shutil.rmtree(path, ignore_errors=True)
