"""A team-shared state backend: Pulumi's own ``s3://`` backend on an S3 emulator (moto) on loopback.

Two client processes submit at once against the same backend; ``toolkit gc``
run by one must not destroy the other's live stack, and does collect a dead one's.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import boto3
import pytest

from tests.clients import start_holding_client
from tests.emulators.aws import REGION, aws_emulator  # noqa: F401 - fixture
from toolkit import gc
from toolkit.engine import list_run_stacks
from toolkit.pools.registry import PoolRegistry, WorkPool

pytestmark = [pytest.mark.engine, pytest.mark.slow]

POOL = "shared-state"


@pytest.fixture(scope="module")
def backend(aws_emulator: str):  # noqa: F811 - the imported fixture
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="toolkit-state")
    # gocloud's v1 name for path-style addressing: every supported CLI reads it (3.245.0's gocloud upgrade
    # renamed it use_path_style, which a 3.212.0 CLI refuses as an "unknown query parameter"; 3.246.0 reads both).
    url = f"s3://toolkit-state?endpoint={aws_emulator}&s3ForcePathStyle=true&region={REGION}"
    PoolRegistry().save(WorkPool(name=POOL, type="process", backend_url=url), overwrite=True)
    yield url
    PoolRegistry().delete(POOL)


SUBMIT = textwrap.dedent(
    f"""
    import json, sys
    from toolkit import process

    @process(pool="{POOL}")
    def cube(x):
        return x ** 3

    first = int(sys.argv[1])
    futures = [cube.submit(x) for x in range(first, first + 4)]
    print(json.dumps([f.result(timeout=600) for f in futures]))
    """
)

def test_two_clients_submit_at_once_through_the_shared_backend(backend, tmp_path):
    script = tmp_path / "submit.py"
    script.write_text(SUBMIT)
    clients = [subprocess.Popen([sys.executable, str(script), str(n)], stdout=subprocess.PIPE, text=True) for n in (0, 4)]
    results = []
    for client in clients:
        out, _ = client.communicate(timeout=900)
        assert client.returncode == 0
        results += json.loads(out.strip().splitlines()[-1])
    assert results == [x**3 for x in range(8)]
    assert list_run_stacks(backend) == []


def test_gc_of_one_client_spares_a_live_clients_stack_and_collects_a_dead_ones(backend, tmp_path):
    holder, run_id = start_holding_client(tmp_path, "process", POOL)
    try:
        collector = subprocess.run(
            [sys.executable, "-m", "toolkit", "gc", "--json"], capture_output=True, text=True, timeout=300
        )
        assert collector.returncode == 0, collector.stderr
        assert json.loads(collector.stdout) == {"leaks": [], "unreadable": [], "stray_jobs": [], "unsearched": []}
        assert [name for name, _ in list_run_stacks(backend)] == [f"run-{run_id}"]
        assert holder.poll() is None  # still running, untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.5)
    leaks = gc.collect(urls=[backend]).leaks
    assert [(leak.stack, leak.destroyed) for leak in leaks] == [(f"run-{run_id}", True)]
    assert list_run_stacks(backend) == []
