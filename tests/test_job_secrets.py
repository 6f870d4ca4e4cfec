"""The local job's secrets file: written 0600 for the job's user, loaded into the job's environment, deleted.

No engine: the provider-side ``secrets_file.write`` and the runner's
``load_secrets`` as the two processes call them, for a root client (the file
is handed to the job's uid) and a client that is not root (it stays its own).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.storage_roundtrip import ROOT, sealed_bundle
from toolkit.bundles import BUNDLE_NAME, RESULT_NAME, RUN_KEY_ENV, unseal_result
from toolkit.providers import secrets_file

VALUES = {RUN_KEY_ENV: "k" * 64, "TOKEN": "t0ken-value"}


def test_written_0600_and_handed_to_the_jobs_user_when_the_client_is_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("handing a file to another uid needs a root client")
    path = Path(secrets_file.write(str(tmp_path), VALUES, "1234:2345"))
    info = path.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, 1234, 2345)
    assert json.loads(path.read_text()) == VALUES


def test_a_client_that_is_not_root_writes_it_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: no chown is tried (it would fail), the file stays the client's own, 0600."""
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "fchown", lambda *_args: pytest.fail("a client that is not root tried to chown"))
    info = Path(secrets_file.write(str(tmp_path), VALUES, "1000:1000")).stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, me)


def test_docker_jobs_of_a_client_that_is_not_root_run_as_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its default user is its own ids; another uid is refused before provisioning, naming the fix."""
    from toolkit.errors import ConfigError
    from toolkit.targets.docker import models
    from toolkit.targets.docker.target import DockerTarget

    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    monkeypatch.setattr(os, "getegid", lambda: 1002)
    assert models.default_user() == "1001:1002"
    monkeypatch.setattr("toolkit.targets.docker.target._docker_client", lambda: _EngineWithImage())
    target = DockerTarget()
    target.preflight(models.DockerJob(image="img", user="1001:1002"), "pool")
    with pytest.raises(ConfigError, match=r"runs docker jobs as user '1000:1000', but this client runs as uid 1001 .* "
                                          r"Pass user='1001:1002'"):
        target.preflight(models.DockerJob(image="img", user="1000:1000"), "pool")


class _EngineWithImage:
    """docker-py's client as preflight uses it: the engine answers and has every image."""

    def ping(self) -> bool:
        return True

    class images:  # noqa: N801 - the attribute name docker-py uses
        @staticmethod
        def get(name: str) -> str:
            return name


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / secrets_file.SECRETS_NAME).write_text("planted")
    with pytest.raises(FileExistsError):
        secrets_file.write(str(tmp_path), VALUES, None)


def test_the_runner_loads_the_file_into_the_environment_deletes_it_and_verifies_with_the_key(tmp_path: Path) -> None:
    """The real runner in a subprocess whose environment holds no secret: the function sees them all the same."""

    key = VALUES[RUN_KEY_ENV]
    (tmp_path / BUNDLE_NAME).write_bytes(sealed_bundle(key))
    written = secrets_file.write(str(tmp_path), VALUES, None)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "PULUMI_"))}
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.runner", "--storage", str(tmp_path), "--secrets", written],
        env={**environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert unseal_result((tmp_path / RESULT_NAME).read_bytes(), key, "result") == 42
    assert not Path(written).exists()


def test_a_job_started_twice_refuses_clearly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit.runner", "--storage", str(tmp_path), "--secrets", str(tmp_path / "gone.json")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3 and "reads it once" in done.stderr and "Submit the call again" in done.stderr
