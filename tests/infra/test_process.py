"""Process target: conformance under mocks plus what is specific to a local subprocess."""

from __future__ import annotations

from tests.infra.conformance import SECRET_ENV, TargetConformance
from toolkit.infra.process import ProcessTarget


class TestProcessTarget(TargetConformance):
    target_cls = ProcessTarget
    sample_variables = {"env": {"MODE": "fast"}, "command": ["nice", "-n", "5"], "timeout": 30}
    mock_outputs = {"pulumi-python:dynamic/toolkit:LocalProcess": {"pid": 4242}}

    def test_job_runs_the_runner_behind_the_command_prefix(self) -> None:
        run = self.program(self.sample())
        job = run.one("pulumi-python:dynamic/toolkit:LocalProcess")
        argv = job.inputs["argv"]
        assert argv[:3] == ["nice", "-n", "5"]
        assert argv[-3:-1] == ["toolkit.runner", "--storage"] and argv[-1].endswith(self.run_id)
        assert {"env.TOOLKIT_RUN_KEY", f"env.{SECRET_ENV}"} <= job.secret_paths()
        assert job.inputs["env"]["MODE"] == "fast"

    def test_run_directory_is_private(self) -> None:
        run = self.program()
        storage = run.one("pulumi-python:dynamic/toolkit:RunStorage")
        assert storage.inputs["mode"] == "700" and storage.inputs["url"].endswith(self.run_id)
