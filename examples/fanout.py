"""Fan out: eight calls at once, each its own stack, results gathered as they finish.

    python examples/fanout.py
"""

import time

from toolkit import process


@process
def square(x: int) -> int:
    time.sleep(0.5)
    return x * x


if __name__ == "__main__":
    started = time.monotonic()
    futures = [square.submit(x) for x in range(8)]
    results = [future.result() for future in futures]
    print(results, f"in {time.monotonic() - started:.1f}s")
    assert results == [x * x for x in range(8)]
