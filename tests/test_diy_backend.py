"""Run stacks created as files in a local backend are stacks the real CLI knows, tags included,
and what a killed client can leave of them is swept by gc."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit import diy_backend, settings
from toolkit.engine import RUN_TAG, RunStack, RunTag, list_run_stacks
from toolkit.workspace import break_stale_lock, ensure_local_backend, owner_tag

PROJECT = settings.RUN_PROJECT


@pytest.fixture
def backend(tmp_path: Path) -> str:
    url = f"file://{tmp_path / 'state'}"
    ensure_local_backend(url)
    return url


def _files(backend: str) -> list[str]:
    directory = diy_backend.stacks_dir(backend, PROJECT)
    return sorted(path.name for path in directory.iterdir()) if directory and directory.exists() else []


def test_a_new_backend_gets_the_project_layout_the_cli_would_pick(backend: str, tmp_path: Path) -> None:
    assert (tmp_path / "state" / ".pulumi" / "meta.yaml").read_text() == "version: 1\n"
    assert diy_backend.writable_layout(backend, {})
    legacy = tmp_path / "legacy"
    (legacy / ".pulumi" / "stacks").mkdir(parents=True)
    (legacy / ".pulumi" / "stacks" / "old.json").write_text("{}")
    diy_backend.ensure_layout(f"file://{legacy}")  # the CLI keeps such a backend on the legacy layout
    assert not (legacy / ".pulumi" / "meta.yaml").exists()
    assert not diy_backend.writable_layout(f"file://{legacy}", {})


def test_layouts_it_does_not_know_are_left_to_the_cli(backend: str) -> None:
    assert not diy_backend.writable_layout(backend, {"PULUMI_DIY_BACKEND_GZIP": "true"})
    assert not diy_backend.writable_layout(backend, {"PULUMI_DIY_BACKEND_LEGACY_LAYOUT": "1"})
    assert not diy_backend.writable_layout(backend, {"PULUMI_DIY_BACKEND_ZSTD": "true"})  # CLI 3.224.0 on
    assert not diy_backend.writable_layout(backend, {"PULUMI_SELF_MANAGED_STATE_GZIP": "1"})  # the older name
    assert diy_backend.writable_layout(backend, {"PULUMI_DIY_BACKEND_GZIP": "false"})
    assert not diy_backend.writable_layout("s3://bucket?region=x", {})


@pytest.mark.engine
def test_stack_and_tag_written_as_files_are_what_the_cli_lists_and_destroys(backend: str) -> None:
    tag = RunTag(pool="p", function="f", owner=owner_tag(os.getpid()), created=time.time(), ttl=60)
    diy_backend.create_stack(backend, PROJECT, "run-0123456789ab", {RUN_TAG: tag.model_dump_json()})
    with pytest.raises(FileExistsError, match="already exists"):
        diy_backend.create_stack(backend, PROJECT, "run-0123456789ab", {})
    [(name, tags)] = list_run_stacks(backend)
    assert name == "run-0123456789ab" and RunTag.from_tags(tags) == tag
    RunStack.existing(name, backend).destroy_and_remove()
    assert list_run_stacks(backend) == []
    assert _files(backend) == []  # no checkpoint, backup or tags file left


def test_orphaned_files_are_swept_once_old_and_only_without_their_stack(backend: str) -> None:
    diy_backend.create_stack(backend, PROJECT, "run-live", {RUN_TAG: "{}"})
    directory = diy_backend.stacks_dir(backend, PROJECT)
    assert directory is not None
    for name in ("run-dead.pulumi-tags", "run-dead.json.bak", "run-dead.json.bak.attrs", "run-new.pulumi-tags"):
        (directory / name).write_text(json.dumps({}))
    past = time.time() - 2 * diy_backend.ORPHAN_GRACE_SECONDS
    for name in ("run-dead.pulumi-tags", "run-dead.json.bak", "run-live.pulumi-tags"):
        os.utime(directory / name, (past, past))
    removed = diy_backend.sweep_orphans(backend, PROJECT)
    assert sorted(Path(path).name for path in removed) == ["run-dead.json.bak", "run-dead.pulumi-tags"]
    # a live stack's tags and a file too young to judge (a stack being created) stay
    assert _files(backend) == ["run-live.json", "run-live.pulumi-tags", "run-new.pulumi-tags"]


def test_empty_history_and_lock_directories_of_removed_stacks_are_swept_and_others_kept(backend: str) -> None:
    diy_backend.create_stack(backend, PROJECT, "run-live", {RUN_TAG: "{}"})
    past = time.time() - 2 * diy_backend.ORPHAN_GRACE_SECONDS
    made = []
    for parent in diy_backend.bookkeeping_dirs(backend, PROJECT):
        for stack in ("run-dead", "run-live", "run-busy", "run-new"):
            (parent / stack).mkdir(parents=True)
            made.append(parent / stack)
        (parent / "run-busy" / "held.json").write_text("{}")  # a lock or history file: not empty
        for stack in ("run-dead", "run-live", "run-busy"):
            os.utime(parent / stack, (past, past))
    removed = diy_backend.sweep_orphans(backend, PROJECT)
    assert sorted(Path(path).name for path in removed) == ["run-dead", "run-dead"]
    assert sorted(path.name for path in made if path.exists()) == sorted(["run-live", "run-busy", "run-new"] * 2)



def test_a_dead_processs_lock_goes_with_its_attrs_file_so_the_lock_directory_can_be_removed(backend: str) -> None:
    """The CLI's blob store writes ``<lock>.json.attrs`` beside each lock file; a lock left by a killed ``pulumi``
    must go with it, or the stack's lock directory outlives the stack (gc then leaves it for good)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    locks = diy_backend.bookkeeping_dirs(backend, PROJECT)[1]
    for stack, pid in (("run-dead", dead.pid), ("run-held", os.getpid())):
        (locks / stack).mkdir(parents=True)
        lock = {"pid": pid, "username": "root", "hostname": socket.gethostname(), "timestamp": "2026-01-01T00:00:00Z"}
        (locks / stack / "3f1c.json").write_text(json.dumps(lock))
        (locks / stack / "3f1c.json.attrs").write_text(json.dumps({"md5": "LEb9CLlbe+o+xPfal2mizw=="}))
    assert [Path(path).name for path in break_stale_lock("run-dead", backend)] == ["3f1c.json"]
    assert break_stale_lock("run-held", backend) == []
    assert sorted(path.name for path in (locks / "run-held").iterdir()) == ["3f1c.json", "3f1c.json.attrs"]
    diy_backend.remove_leftovers(backend, PROJECT, "run-dead")  # what gc's destroy ends with
    assert not (locks / "run-dead").exists()
