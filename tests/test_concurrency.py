"""Load: 20 simultaneous submissions from threads and from separate processes on 2 cores.

No plugin-install race, no state corruption, every result correct, nothing left behind.
Each runs in a fresh interpreter, so the 20 are the first calls of their process: nothing
a call learns once (the caller's interpreter, the installed distributions) is known yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.leaks import assert_nothing_left

pytestmark = [pytest.mark.engine, pytest.mark.slow]


THREADS_CLIENT = textwrap.dedent(
    """
    import json, threading
    from concurrent.futures import ThreadPoolExecutor
    from toolkit import process
    from toolkit.futures import wait_for_teardowns

    @process
    def cube(x):
        return x ** 3

    start = threading.Barrier(20)

    def submit(x):
        start.wait()  # all 20 make their first call at the same moment
        return cube.submit(x)

    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = list(pool.map(submit, range(20)))
    results = [f.result(timeout=600) for f in futures]
    wait_for_teardowns()
    print(json.dumps({"results": results, "states": sorted({f.state for f in futures}),
                      "teardown_errors": [str(f.teardown_error) for f in futures if f.teardown_error]}))
    """
)


def test_twenty_submissions_from_threads_at_once(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(THREADS_CLIENT)
    client = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=1200)
    assert client.returncode == 0, client.stderr[-4000:]
    outcome = json.loads(client.stdout.strip().splitlines()[-1])
    assert outcome == {"results": [x**3 for x in range(20)], "states": ["completed"], "teardown_errors": []}
    assert_nothing_left()


CLIENT = textwrap.dedent(
    """
    import json, sys
    from toolkit import process

    @process
    def cube(x):
        return x ** 3

    first = int(sys.argv[1])
    futures = [cube.submit(x) for x in range(first, first + 5)]
    print(json.dumps([f.result(timeout=600) for f in futures]))
    """
)


def test_twenty_submissions_from_four_processes_at_once(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    clients = [
        subprocess.Popen([sys.executable, str(script), str(first)], stdout=subprocess.PIPE, text=True)
        for first in (0, 5, 10, 15)
    ]
    results = []
    for client in clients:
        out, _ = client.communicate(timeout=900)
        assert client.returncode == 0
        results += json.loads(out.strip().splitlines()[-1])
    assert results == [x**3 for x in range(20)]
    assert_nothing_left()  # each client waited for its teardowns before exiting
