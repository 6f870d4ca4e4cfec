"""Run stacks encrypted with a cloud KMS: ``awskms://`` against the AWS API emulator, for real.

The Pulumi CLI's gocloud ``awskms`` keeper uses the AWS SDK for Go v2, which
honours the standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_KMS`` variables:
pointed at moto's server, every data-key operation of the CLI goes to a real
KMS API. The state then holds only ciphertext, and other processes (``toolkit
gc``, ``toolkit runs cancel``) tear the stacks down with nothing but the same
environment.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from pulumi import automation as auto

import toolkit
from tests.clients import kill_holding_client
from tests.emulators.aws import REGION, aws_emulator  # noqa: F401 - fixture
from tests.leaks import assert_nothing_left
from tests.test_secret_hygiene import SECRET, grep_tree, with_encodings
from toolkit import process, settings
from toolkit.engine import RUN_TAG, RunTag, list_run_stacks, selected_stack
from toolkit.futures import wait_for_teardowns
from toolkit.operations import OperationStack
from toolkit.pools.registry import PoolRegistry, WorkPool
from toolkit.toolchain.pulumi_env import pulumi_env
from toolkit.workspace import pulumi_command

pytestmark = [pytest.mark.engine, pytest.mark.slow]

POOL = "kms-runs"


@pytest.fixture(scope="module")
def kms_pool(aws_emulator: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811 - the imported fixture
    key_id = boto3.client("kms", region_name=REGION).create_key(Description="toolkit run stacks")["KeyMetadata"]["KeyId"]
    backend_dir = tmp_path_factory.mktemp("kms-backend")
    provider = f"awskms://{key_id}?region={REGION}"
    PoolRegistry().save(
        WorkPool(name=POOL, type="process", backend_url=f"file://{backend_dir}", secrets_provider=provider),
        overwrite=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL_KMS", aws_emulator)  # the service-specific form; AWS_ENDPOINT_URL is set too
        yield backend_dir, provider
    PoolRegistry().delete(POOL)


@process(pool=POOL)
def uses_secret(release: str) -> str:
    import os

    print("the job runs", flush=True)
    while not os.path.exists(release):
        time.sleep(0.05)
    return os.environ["TOKEN"][::-1]


def _checkpoint(backend_dir: Path, run_id: str) -> dict:
    path = backend_dir / ".pulumi" / "stacks" / settings.RUN_PROJECT / f"run-{run_id}.json"
    return json.loads(path.read_text())


def test_kms_encrypted_state_holds_only_ciphertext(kms_pool, tmp_path):
    backend_dir, provider = kms_pool
    release = tmp_path / "release"
    future = uses_secret.with_options(env={"TOKEN": toolkit.secret(SECRET)}).submit(str(release))
    run_key = future._prepared.context.run_key
    try:
        deadline = time.monotonic() + 120
        while "the job runs" not in future.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert future.state == "running"
        assert grep_tree(backend_dir, with_encodings([SECRET, run_key])) == []
        deployment = _checkpoint(backend_dir, future.run_id)["checkpoint"]["latest"]
        secrets_provider = deployment["secrets_providers"]
        assert secrets_provider["type"] == "cloud" and secrets_provider["state"]["url"] == provider
        # The state's data key is a ciphertext of the emulator's KMS key: KMS decrypts it.
        data_key = boto3.client("kms", region_name=REGION).decrypt(
            CiphertextBlob=base64.b64decode(secrets_provider["state"]["encryptedkey"])
        )
        assert len(data_key["Plaintext"]) == 32
        assert '"ciphertext"' in json.dumps(deployment["resources"])  # the secrets are there, encrypted
        with selected_stack(f"run-{future.run_id}", f"file://{backend_dir}") as stack:
            plain = pulumi_command().run(["stack", "export", "--stack", stack.name], stack.workspace.work_dir,
                                         pulumi_env(f"file://{backend_dir}")).stdout
            revealed = pulumi_command().run(["stack", "export", "--show-secrets", "--stack", stack.name],
                                            stack.workspace.work_dir, pulumi_env(f"file://{backend_dir}")).stdout
        assert SECRET not in plain and run_key not in plain
        assert run_key in revealed  # decrypting through the emulator's KMS gives the value back
    finally:
        release.touch()
    assert future.result(timeout=120) == SECRET[::-1]
    wait_for_teardowns()
    assert grep_tree(backend_dir, with_encodings([SECRET, run_key])) == []
    assert_nothing_left(f"file://{backend_dir}")


def test_gc_and_runs_cancel_from_other_processes_destroy_kms_stacks(kms_pool, tmp_path):
    backend_dir, _ = kms_pool
    backend = f"file://{backend_dir}"
    env = dict(os.environ)  # the same setting: the emulator's endpoint and credentials

    cancelled = kill_holding_client(tmp_path, "process", POOL)
    cancel = subprocess.run([sys.executable, "-m", "toolkit", "runs", "cancel", cancelled],
                            capture_output=True, text=True, timeout=300, env=env)
    assert cancel.returncode == 0, cancel.stderr
    assert f"run-{cancelled}" not in [name for name, _ in list_run_stacks(backend)]

    collected = kill_holding_client(tmp_path, "process", POOL)
    assert [name for name, _ in list_run_stacks(backend)] == [f"run-{collected}"]
    gc = subprocess.run([sys.executable, "-m", "toolkit", "gc", "--json"], capture_output=True, text=True,
                        timeout=300, env=env)
    assert gc.returncode == 0, gc.stderr
    assert [(leak["stack"], leak["destroyed"]) for leak in json.loads(gc.stdout)["leaks"]] == [(f"run-{collected}", True)]
    assert_nothing_left(backend)  # stacks and their bookkeeping in the pool's backend; run directories, bundles


def test_a_tag_the_call_beside_up_could_not_set_is_set_once_up_is_done(kms_pool, tmp_path, monkeypatch):
    """On a backend the CLI creates stacks in, the gc tag is set beside ``up``; that call can read the checkpoint
    while ``up`` rewrites it and fail (seen here under load), which must not fail the run or leave it untagged."""
    backend_dir, _ = kms_pool
    real_set_tag = OperationStack.set_tag
    calls: list[str] = []

    def set_tag_failing_once(stack: OperationStack, key: str, value: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise auto.errors.CommandError(
                auto.CommandResult(stdout="", stderr="error: failed to load checkpoint: EOF", code=1)
            )
        real_set_tag(stack, key, value)

    monkeypatch.setattr(OperationStack, "set_tag", set_tag_failing_once)
    release = tmp_path / "release"
    future = uses_secret.with_options(env={"TOKEN": toolkit.secret(SECRET)}).submit(str(release))
    try:
        deadline = time.monotonic() + 120
        while "the job runs" not in future.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert future.state == "running"
        [(name, tags)] = list_run_stacks(f"file://{backend_dir}")
        assert name == f"run-{future.run_id}" and RunTag.model_validate_json(tags[RUN_TAG]).pool == POOL
    finally:
        release.touch()
    assert future.result(timeout=120) == SECRET[::-1]
    assert calls == [RUN_TAG, RUN_TAG]
    wait_for_teardowns()
    assert_nothing_left(f"file://{backend_dir}")
