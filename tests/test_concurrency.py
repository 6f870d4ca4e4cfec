"""Load: 20 simultaneous submissions from threads and from separate processes on 2 cores.

No plugin-install race, no state corruption, every result correct, nothing left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.leaks import assert_nothing_left
from toolkit import process
from toolkit.futures import wait_for_teardowns

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@process
def cube(x: int) -> int:
    return x**3


def test_twenty_submissions_from_threads_at_once():
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = list(pool.map(cube.submit, range(20)))  # all submitted from 20 threads
    assert [f.result(timeout=600) for f in futures] == [x**3 for x in range(20)]
    wait_for_teardowns()
    assert {f.state for f in futures} == {"completed"}
    assert not any(f.teardown_error for f in futures)
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
