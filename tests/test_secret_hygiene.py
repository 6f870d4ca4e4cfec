"""Secrets never in plaintext: state, ``pulumi stack export``, the live job, previews, progress, logs, bundles.

A secret env value and the run's signing key are looked for everywhere a run
leaves text, while the job runs (state holds its resources, the container or
process exists) and after. ``check_while_running`` and ``check_after`` are
shared with the real-cluster test (tests/k8s/test_kubernetes_real.py), which
adds the live Job and pod as the API server returns them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest

import toolkit
from tests.leaks import assert_nothing_left
from toolkit import RunFuture, docker, process, records, settings
from toolkit.engine import selected_stack
from toolkit.futures import wait_for_teardowns
from toolkit.toolchain.pulumi_env import pulumi_env
from toolkit.workspace import pulumi_command

pytestmark = pytest.mark.engine

SECRET = "S3CRET-value-4d0c1a-never-in-plaintext"
RELEASE = "release"


def reports_what_it_sees() -> dict[str, Any]:
    """The job: waits to be released, then reports its environment as the kernel shows it.

    Finds its run storage the way the runner got it (``--storage``), so the
    test can release it on every target by writing a marker there.
    """
    import json
    import os
    import sys
    import time

    import fsspec

    url = sys.argv[sys.argv.index("--storage") + 1]
    fs, root = fsspec.core.url_to_fs(url, **json.loads(os.environ.get("TOOLKIT_STORAGE_OPTIONS") or "{}"))
    print("the job runs; its token has", len(os.environ["TOKEN"]), "characters", flush=True)
    deadline = time.monotonic() + 300
    while not fs.exists(f"{root}/release") and time.monotonic() < deadline:
        time.sleep(0.1)
        fs.invalidate_cache()
    # The processes that are the job: its own and its ancestors in its session (a wrapper; in a container its
    # init, pid 1), not the machine's init a process job is handed to. One that cannot be read fails the job,
    # and so the test: an environment nobody looked at must not pass as clean.
    environs = {}
    pid, session = os.getpid(), os.getsid(0)
    while pid > 0 and os.getsid(pid) == session:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environs[str(pid)] = handle.read().decode(errors="replace")
        with open(f"/proc/{pid}/stat", "rb") as handle:
            pid = int(handle.read().rpartition(b")")[2].split()[1])  # the parent (0: none in this namespace)
    return {
        "token_reversed": os.environ["TOKEN"][::-1],
        "run_key_in_environ": "TOOLKIT_RUN_KEY" in os.environ,
        "secrets_file_left": fs.exists(f"{root}/secrets.json"),
        "proc_environ": environs,
    }


# -- shared checks --------------------------------------------------------------------------------------


def grep_tree(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {needle[:8]}..." for needle in needles if needle.encode() in data]
    return hits


def stack_export(stack_name: str, show_secrets: bool) -> dict[str, Any]:
    """``pulumi stack export [--show-secrets]`` by the CLI itself (the Automation API's export always decrypts)."""
    backend = settings.default_backend_url()
    with selected_stack(stack_name, backend) as stack:
        args = ["stack", "export", "--stack", stack.name, *(["--show-secrets"] if show_secrets else [])]
        return json.loads(pulumi_command().run(args, stack.workspace.work_dir, pulumi_env(backend)).stdout)


def holders(export: dict[str, Any], needle: str) -> set[str]:
    """Types of the resources whose state text contains ``needle``."""
    return {r["type"] for r in export["deployment"].get("resources", []) if needle in json.dumps(r)}


def wait_until_running(future: RunFuture, text: str = "characters", seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while text not in future.logs() and not future.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert future.state == "running", f"run {future.run_id} is {future.state}: {future.logs()}"


def release(future: RunFuture) -> None:
    """Write the marker the job waits for into the run's storage."""
    context = future._prepared.context
    fs, root = fsspec.core.url_to_fs(context.storage_url, **context.storage_options)
    fs.pipe_file(f"{root}/{RELEASE}", b"")


def with_encodings(values: list[str]) -> list[str]:
    """The values and their base64 forms (a Kubernetes Secret's ``data``, HTTP basic auth ...)."""
    return values + [base64.b64encode(value.encode()).decode() for value in values]


def check_while_running(future: RunFuture, values: list[str], secret_holders: set[str]) -> None:
    """State files, and plain and decrypting exports, while the job runs."""
    needles = with_encodings(values)
    state_dir = Path(settings.default_backend_url().removeprefix("file://"))
    assert grep_tree(state_dir, needles) == []
    plain = stack_export(f"run-{future.run_id}", show_secrets=False)
    assert len(plain["deployment"]["resources"]) > 2  # the run's resources are in the state being checked
    assert {needle[:8]: holders(plain, needle) for needle in needles} == {needle[:8]: set() for needle in needles}
    decrypted = stack_export(f"run-{future.run_id}", show_secrets=True)
    # decrypted, each secret shows up (as is or base64), and only in the resource meant to carry it to the job
    shown = {value[:8]: set().union(*(holders(decrypted, form) for form in with_encodings([value]))) for value in values}
    assert shown == {value[:8]: secret_holders for value in values}


def check_after(future: RunFuture, needles: list[str], captured: Any) -> None:
    """Logs, progress output, the run record and everything under TOOLKIT_HOME, once torn down."""
    assert future.wait_teardown(180)
    for text in (captured.out, captured.err, future.logs(), records.load(future.run_id).logs()):
        assert all(needle not in text for needle in needles)
    assert f"{future.run_id}" in captured.err  # the progress output was captured, so it was checked
    assert grep_tree(settings.home(), needles) == []


def check_job_saw(value: dict[str, Any], needles: list[str], environ_clean: bool) -> None:
    """What the job reported: the secret arrived; with ``environ_clean``, no process environment held it."""
    assert value["token_reversed"] == SECRET[::-1]  # it did reach the job
    assert value["run_key_in_environ"] is False  # the runner took it out before calling the function
    assert value["secrets_file_left"] is False  # and deleted the file it came in
    if environ_clean:
        for pid, environ in value["proc_environ"].items():
            assert all(needle not in environ for needle in needles), f"/proc/{pid}/environ holds a secret"


def preview_hides(bound: Any) -> None:
    plan = bound.preview()
    assert plan.changes and all(SECRET not in text for text in (str(plan), plan.to_json()))


def bundle_of(future: RunFuture) -> bytes:
    context = future._prepared.context
    fs, root = fsspec.core.url_to_fs(context.storage_url, **context.storage_options)
    return fs.cat_file(f"{root}/bundle.tkb")


def run_and_check(
    bound: Any,
    secret_holders: set[str],
    live_job: Callable[[RunFuture], str],
    capfd: pytest.CaptureFixture[str],
    environ_clean: bool = True,
) -> RunFuture:
    """Preview, submit, check everything while the job runs and after; returns the finished future.

    ``secret_holders``: the resource types that may show the secret in a decrypting export.
    ``live_job``: the live job as its platform shows it (``docker inspect``, the Job and pods).
    """
    preview_hides(bound)
    future = bound.submit()
    values = [SECRET, future._prepared.context.run_key]  # the test needs the key to look for it
    needles = with_encodings(values)
    try:
        wait_until_running(future)
        check_while_running(future, values, secret_holders)
        live = live_job(future)
        assert future.run_id in live and all(needle not in live for needle in needles)
        bundle = bundle_of(future)
        assert all(needle.encode() not in bundle for needle in needles)
    finally:
        release(future)
    check_job_saw(future.result(timeout=300), needles, environ_clean)
    wait_for_teardowns()
    check_after(future, needles, capfd.readouterr())
    return future


# -- the local targets ------------------------------------------------------------------------------------

STORAGE = "toolkit:index:RunStorage"


def _docker_inspect(future: RunFuture) -> str:
    inspected = subprocess.run(["docker", "inspect", f"toolkit-{future.run_id}"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)[0]["State"]["Running"] is True
    return inspected.stdout


def _process_environ(future: RunFuture) -> str:
    """The job process and its wrapper, as ``/proc`` shows them to anyone allowed to look."""
    found = subprocess.run(["pgrep", "-f", f"toolkit.runner --storage {future._prepared.context.storage_url}"],
                           capture_output=True, text=True)
    pids = found.stdout.split()
    assert pids, "the job process was not found"
    texts = [Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in pids]
    texts += [Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace") for pid in pids]
    return f"{future.run_id}\n" + "\n".join(texts)


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    wait_for_teardowns()
    assert_nothing_left()


def test_process_secret_and_run_key_never_in_plaintext(monkeypatch, capfd):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")
    bound = process(reports_what_it_sees).with_options(env={"TOKEN": toolkit.secret(SECRET)})
    run_and_check(bound, {STORAGE}, _process_environ, capfd)


@pytest.mark.docker
def test_docker_secret_and_run_key_never_in_plaintext(monkeypatch, capfd):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")
    bound = docker(reports_what_it_sees).with_options(env={"TOKEN": toolkit.secret(SECRET), "MODE": "plain"})
    run_and_check(bound, {STORAGE}, _docker_inspect, capfd)


def test_run_directory_is_private_on_disk():
    """The process target's run directory is 0700 on disk, in a 0700 parent; its secrets file 0600."""
    @process
    def look() -> dict[str, Any]:
        import os
        import stat

        run_dir = os.getcwd()
        return {
            "dir": stat.S_IMODE(os.stat(run_dir).st_mode),
            "parent": stat.S_IMODE(os.stat(os.path.dirname(run_dir)).st_mode),
            "secrets_file_left": os.path.exists(os.path.join(run_dir, "secrets.json")),
        }

    seen = look()
    assert seen == {"dir": 0o700, "parent": 0o700, "secrets_file_left": False}
