"""Process target: conformance under mocks plus what is specific to a local subprocess."""

from __future__ import annotations

from typing import Any

from tests.infra.conformance import RUN_KEY, SECRET_ENV, SECRET_VALUE, TargetConformance
from toolkit import settings
from toolkit.infra.process import ProcessTarget


class TestProcessTarget(TargetConformance):
    target_cls = ProcessTarget
    sample_variables = {"env": {"MODE": "fast"}, "command": ["nice", "-n", "5"], "timeout": 30}
    mock_outputs = {"pulumi-python:dynamic/toolkit:LocalProcess": {"pid": 4242}}
    job_type = "pulumi-python:dynamic/toolkit:LocalProcess"
    expected_resources = {
        ("pulumi-python:dynamic/toolkit:RunStorage", "run-directory"),
        ("pulumi-python:dynamic/toolkit:LocalProcess", "job"),
    }

    @property
    def expected_exports(self) -> dict[str, Any]:  # type: ignore[override]
        return {"pid": 4242, "run_dir": str(settings.home() / "work" / self.run_id)}

    def test_job_runs_the_runner_behind_the_command_prefix(self) -> None:
        run = self.program(self.sample())
        job = run.one("pulumi-python:dynamic/toolkit:LocalProcess")
        argv = job.inputs["argv"]
        assert argv[:3] == ["nice", "-n", "5"]
        storage = run.one("pulumi-python:dynamic/toolkit:RunStorage")
        run_dir = storage.inputs["url"]
        assert argv[-5:] == ["toolkit.runner", "--storage", run_dir, "--secrets", f"{run_dir}/secrets.json"]
        # the run key and the secret env value go to the job's 0600 secrets file, never its environment
        assert job.inputs["env"] == {"MODE": "fast"}
        assert storage.inputs["secrets"] == {"TOOLKIT_RUN_KEY": RUN_KEY, SECRET_ENV: SECRET_VALUE}
        assert storage.secret_paths() - {"__provider"} == {"secrets.TOOLKIT_RUN_KEY", f"secrets.{SECRET_ENV}"}

    def test_run_directory_is_private(self) -> None:
        run = self.program()
        storage = run.one("pulumi-python:dynamic/toolkit:RunStorage")
        assert storage.inputs["mode"] == "700" and storage.inputs["url"].endswith(self.run_id)
