"""Process target: conformance under mocks plus what is specific to a local subprocess."""

from __future__ import annotations

from typing import Any

from tests.infra.conformance import RUN_KEY, SECRET_ENV, SECRET_VALUE, TargetConformance, items_argument
from tests.infra.mocking import ProgramRun
from toolkit import settings
from toolkit.targets.process import ProcessTarget


class TestProcessTarget(TargetConformance):
    target_cls = ProcessTarget
    sample_variables = {"env": {"MODE": "fast"}, "command": ["nice", "-n", "5"], "timeout": 30}
    mock_outputs = {"toolkit:index:LocalProcess": {"pid": 4242}}
    job_type = "toolkit:index:LocalProcess"
    expected_resources = {
        ("toolkit:index:RunStorage", "run-directory"),
        ("toolkit:index:LocalProcess", "job"),
    }

    @property
    def expected_exports(self) -> dict[str, Any]:  # type: ignore[override]
        return {"pid": 4242, "run_dir": str(settings.home() / "work" / self.run_id)}

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        workers = run.of_type("toolkit:index:LocalProcess")
        counts = {items_argument(worker.inputs["argv"]) for worker in workers}
        assert len(counts) == 1 and all("--index-env" not in w.inputs["argv"] for w in workers)  # they claim
        return counts.pop(), len(workers)

    def test_each_map_worker_has_its_own_secrets_file_log_and_directory(self) -> None:
        run = self.map_program(self.sample())
        workers = run.of_type("toolkit:index:LocalProcess")
        files = {w.inputs["argv"][w.inputs["argv"].index("--secrets") + 1].rsplit("/", 1)[-1] for w in workers}
        assert files == set(run.one("toolkit:index:RunStorage").inputs["secrets_names"])
        assert len(files) == len({w.inputs["log_name"] for w in workers}) == len({w.inputs["cwd"] for w in workers}) == 7

    def test_job_runs_the_runner_behind_the_command_prefix(self) -> None:
        run = self.program(self.sample())
        job = run.one("toolkit:index:LocalProcess")
        argv = job.inputs["argv"]
        assert argv[:3] == ["nice", "-n", "5"]
        storage = run.one("toolkit:index:RunStorage")
        run_dir = storage.inputs["url"]
        assert argv[-5:] == ["toolkit.runner", "--storage", run_dir, "--secrets", f"{run_dir}/secrets.json"]
        # the run key and the secret env value go to the job's 0600 secrets file, never its environment
        assert job.inputs["env"] == {"MODE": "fast"}
        assert storage.inputs["secrets"] == {"TOOLKIT_RUN_KEY": RUN_KEY, SECRET_ENV: SECRET_VALUE}
        assert storage.secret_paths() - {"__provider"} == {"secrets.TOOLKIT_RUN_KEY", f"secrets.{SECRET_ENV}"}

    def test_run_directory_is_private(self) -> None:
        run = self.program()
        storage = run.one("toolkit:index:RunStorage")
        assert storage.inputs["mode"] == "700" and storage.inputs["url"].endswith(self.run_id)
