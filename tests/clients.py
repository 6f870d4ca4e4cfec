"""Client processes for tests: a separate interpreter that holds a run on a pool, to keep or to kill.

Used where a test needs a stack whose owner is another process: gc must spare
a live owner's stack and collect a dead one's, from the same or another process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

HOLDING_CLIENT = textwrap.dedent(
    """
    import sys, time
    import toolkit

    decorator = getattr(toolkit, sys.argv[1])
    pool, retries = sys.argv[2] or None, int(sys.argv[3])

    def sleeper():
        time.sleep(600)

    options = {**({"pool": pool} if pool else {}), **({"retries": retries} if retries else {})}
    bound = decorator(**options)(sleeper) if options else decorator(sleeper)
    future = bound.submit()
    while future.state != "running":
        time.sleep(0.1)
    print(future.run_id, flush=True)
    time.sleep(600)
    """
)


def start_holding_client(
    tmp_path: Path, target: str = "process", pool: str | None = None, retries: int = 0
) -> tuple[subprocess.Popen[str], str]:
    """A client process whose run is up and running; returns it and the run id."""
    script = tmp_path / "holding_client.py"
    script.write_text(HOLDING_CLIENT)
    client = subprocess.Popen([sys.executable, str(script), target, pool or "", str(retries)],
                              stdout=subprocess.PIPE, text=True)
    run_id = client.stdout.readline().strip() if client.stdout else ""
    if not run_id:
        client.kill()
        client.wait()
        raise AssertionError("the client never reached the running state")
    return client, run_id


def kill_holding_client(tmp_path: Path, target: str = "process", pool: str | None = None, retries: int = 0) -> str:
    """Start a holding client, then SIGKILL it: its stack is left for gc (or another process) to collect."""
    client, run_id = start_holding_client(tmp_path, target, pool, retries)
    client.send_signal(signal.SIGKILL)
    client.wait()
    return run_id
