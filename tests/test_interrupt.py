"""Ctrl-C: a client blocked in a call is interrupted, cancels, tears down, exits with KeyboardInterrupt.

The client is a real subprocess in its own process group, and SIGINT goes to
the whole group, as a terminal's Ctrl-C does (so the Pulumi CLI and providers
the client runs during teardown get it too). The client starts with the
default SIGINT handler: a background child of a non-interactive shell (CI,
``cmd &``) inherits SIGINT ignored, and Python then installs no
KeyboardInterrupt at all, so a test that forgot this would test nothing.

The kubernetes case is in tests/k8s/test_kubernetes_real.py (it needs the cluster's fixtures).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.leaks import assert_nothing_left
from toolkit import records
from toolkit.futures import wait_for_teardowns

pytestmark = pytest.mark.engine

EXIT_SECONDS = 120
"""Bound on the client's exit after the (last) Ctrl-C: cancel + teardown, never a hang."""

CLIENT = textwrap.dedent(
    """
    import sys, time
    import toolkit

    target, pool = sys.argv[1], sys.argv[2] or None

    @getattr(toolkit, target)(pool=pool) if pool else getattr(toolkit, target)
    def sleeper():
        print("job started", flush=True)
        time.sleep(600)
        return "finished"

    print("client calling", flush=True)
    sleeper()  # blocks: Ctrl-C arrives here
    print("the call returned", flush=True)
    """
)


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default action, whatever the parent inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Client:
    """The client process, its output lines as they come (stdout and stderr), and Ctrl-C for its group."""

    def __init__(
        self, tmp_path: Path, target: str, pool: str = "", env: dict[str, str] | None = None, source: str = CLIENT
    ) -> None:
        script = tmp_path / "client.py"
        script.write_text(source)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(script), target, pool],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TOOLKIT_PROGRESS": "1", **(env or {})},
            start_new_session=True,  # its own process group: Ctrl-C reaches it and its children, not pytest
            preexec_fn=_default_sigint,
        )
        for name, stream in (("out", self.process.stdout), ("err", self.process.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream) -> None:  # noqa: ANN001 - a text pipe
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float) -> str:
        """The first output line containing ``text``; fails if the client exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _name, line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        pytest.fail(f"the client never printed {text!r} (exit status {self.process.poll()}); output:\n" + "\n".join(self.seen))

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def exit_status(self, timeout: float = EXIT_SECONDS) -> int:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"the client still ran {timeout:.0f} s after Ctrl-C; output:\n" + self.output())
        return self.process.returncode

    def output(self) -> str:
        time.sleep(0.2)  # let the pumps drain what the client wrote last
        while not self.lines.empty():
            self.seen.append(self.lines.get()[1])
        return "\n".join(self.seen)


def interrupt_a_blocked_call(tmp_path: Path, target: str, pool: str = "", twice: bool = False) -> str:
    """Start a client blocked in a call on ``target``, Ctrl-C it (twice: again during teardown).

    Asserts it exits with KeyboardInterrupt within ``EXIT_SECONDS`` and that its run was cancelled
    and torn down; returns the run id.
    """
    client = Client(tmp_path, target, pool)
    run_id = client.wait_for(" on pool ", timeout=60).split()[0]  # progress: "<run id> sleeper on pool ..."
    client.wait_for("job started", timeout=300)  # the job runs; the client is blocked in the call
    client.ctrl_c()
    if twice:
        client.wait_for("deleting", timeout=60)  # the teardown's `pulumi destroy` is under way
        client.ctrl_c()
    status = client.exit_status()
    output = client.output()
    if twice:
        assert "still tearing down the stack" in output, output  # the second Ctrl-C reached the client
    assert status == -signal.SIGINT, f"exit status {status}, expected death by SIGINT; output:\n{output}"
    assert "KeyboardInterrupt" in output and "the call returned" not in output, output
    record = records.load(run_id)
    assert (record.state, record.torn_down) == ("cancelled", True), output
    return run_id


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    wait_for_teardowns()
    assert_nothing_left()


@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_ctrl_c_in_a_blocked_call_cancels_tears_down_and_raises_keyboard_interrupt(tmp_path, target):
    interrupt_a_blocked_call(tmp_path, target)


@pytest.mark.parametrize("target", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_a_second_ctrl_c_during_teardown_neither_leaks_nor_hangs(tmp_path, target):
    interrupt_a_blocked_call(tmp_path, target, twice=True)


def _ignore_sigint() -> None:
    """What a background child of a non-interactive shell inherits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ignored_then_reset() -> None:
    """The client's start from an inherited 'ignore', whatever pytest itself inherited."""
    _ignore_sigint()
    _default_sigint()


def test_the_client_really_had_the_default_sigint_handler(tmp_path):
    """Guard for the two tests above: without the reset, an inherited 'ignore' makes Ctrl-C do nothing.

    Both probes start from an ignored SIGINT: a pytest that did not inherit one
    must not let a reset that does nothing pass.
    """
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    ignoring = subprocess.run([sys.executable, "-c", probe], preexec_fn=_ignore_sigint, capture_output=True, text=True)
    assert ignoring.stdout.strip() == "False"  # inherited 'ignore': Python installs no KeyboardInterrupt
    reset = subprocess.run([sys.executable, "-c", probe], preexec_fn=_ignored_then_reset, capture_output=True, text=True)
    assert reset.stdout.strip() == "True"
