"""Secrets never in plaintext: state files, ``pulumi stack export``, previews, logs, bundles.

A secret env value and the run's signing key are grepped for everywhere a run
leaves text, while the run is up (state holds its resources) and after.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import toolkit
from tests.leaks import assert_nothing_left
from toolkit import process, records, settings
from toolkit.engine import pulumi_command, selected_stack
from toolkit.futures import wait_for_teardowns

pytestmark = pytest.mark.engine

SECRET = "S3CRET-value-4d0c1a-never-in-plaintext"


def _grep_tree(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {needle[:8]}..." for needle in needles if needle.encode() in data]
    return hits


@process
def uses_secret(release: str) -> str:
    import os

    print("the job runs; its token has", len(os.environ["TOKEN"]), "characters", flush=True)
    while not os.path.exists(release):
        time.sleep(0.05)
    return os.environ["TOKEN"][::-1]


def test_secret_and_run_key_never_in_plaintext(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")
    release = tmp_path / "release"
    bound = uses_secret.with_options(env={"TOKEN": toolkit.secret(SECRET)})

    plan = bound.preview(str(release))
    assert SECRET not in str(plan) and SECRET not in plan.to_json()

    future = bound.submit(str(release))
    run_key = future._prepared.context.run_key  # the test needs the key to look for it
    needles = [SECRET, run_key]
    try:
        deadline = time.monotonic() + 60
        while "characters" not in future.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert future.state == "running"
        state_dir = Path(settings.default_backend_url().removeprefix("file://"))
        assert _grep_tree(state_dir, needles) == []
        with selected_stack(f"run-{future.run_id}", settings.default_backend_url()) as stack:
            # the plain `pulumi stack export` (the Automation API's export adds --show-secrets)
            exported = pulumi_command().run(
                ["stack", "export", "--stack", stack.name],
                stack.workspace.work_dir,
                settings.pulumi_env(settings.default_backend_url()),
            ).stdout
        assert f"run-{future.run_id}" in exported and "LocalProcess" in exported
        assert SECRET not in exported and run_key not in exported
        bundle = (settings.home() / "work" / future.run_id / "bundle.tkb").read_bytes()
        assert SECRET.encode() not in bundle and run_key.encode() not in bundle
    finally:
        release.touch()
    assert future.result(timeout=120) == SECRET[::-1]  # it did reach the job
    wait_for_teardowns()
    captured = capfd.readouterr()
    for text in (captured.out, captured.err, future.logs(), records.load(future.run_id).logs()):
        assert SECRET not in text and run_key not in text
    assert _grep_tree(settings.home(), needles) == []
    assert_nothing_left()
