"""A package installed mid-session (``pip install`` in a notebook) is part of the next call.

One fresh interpreter, as a notebook's: a function importing a module installed
nowhere is refused before anything exists, on both sides' terms; the package is
then installed into this very interpreter (from a wheel made here, no index);
the same functions, called again in the same interpreter, run with it: the
docker job gets it through its environment image, the process job runs this
interpreter, which now has it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.environments.conftest import fake_wheel
from tests.leaks import assert_nothing_left
from toolkit.futures import wait_for_teardowns

pytestmark = [pytest.mark.engine, pytest.mark.docker, pytest.mark.slow]

DISTRIBUTION = "toolkit-test-latecomer"

CLIENT = textwrap.dedent(
    """
    import json, subprocess, sys
    from toolkit import docker, process, settings

    def uses_the_latecomer():
        import toolkit_test_latecomer
        return toolkit_test_latecomer.VALUE

    calls = {"docker": docker(uses_the_latecomer), "process": process(uses_the_latecomer)}

    def runs():
        return sorted(path.name for path in settings.runs_dir().glob("*"))

    def outcome(call):
        started = runs()
        try:
            return {"value": call()}
        except Exception as exc:
            return {"error": type(exc).__name__, "message": str(exc), "runs_started": len(runs()) - len(started)}

    found = {"before": {name: outcome(call) for name, call in calls.items()}}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", sys.argv[1],
                    "toolkit-test-latecomer"], check=True)
    found["after"] = {name: outcome(call) for name, call in calls.items()}
    print(json.dumps(found))
    """
)


def _uninstall() -> None:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", DISTRIBUTION], capture_output=True)


@pytest.fixture
def latecomer_wheel(tmp_path: Path) -> Iterator[Path]:
    """A directory with the wheel; the distribution is installed into this interpreter only during the test."""
    _uninstall()  # a run killed half-way may have left it
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, DISTRIBUTION, "1.0", "py3-none-any")
    yield wheels
    _uninstall()


def test_a_package_installed_after_the_first_call_is_refused_then_shipped(
    latecomer_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    # The environment resolves with this pip configuration: the wheel's directory only, no index.
    monkeypatch.setenv("PIP_FIND_LINKS", str(latecomer_wheel))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    done = subprocess.run([sys.executable, str(script), str(latecomer_wheel)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])

    for name, before in found["before"].items():
        assert before.get("error") == "MissingModuleError", (name, before)
        assert before["runs_started"] == 0, (name, before)  # refused before a run existed
        message = before["message"]
        assert "uses_the_latecomer imports 'toolkit_test_latecomer'" in message, message
        assert "-m pip install toolkit_test_latecomer" in message and "packages=[...]" in message, message
    assert "nor the job's image" in found["before"]["docker"]["message"]
    assert found["after"] == {"docker": {"value": 1}, "process": {"value": 1}}
    wait_for_teardowns()
    assert_nothing_left()
