"""Docker target: conformance under mocks, and where its secrets go (never the container's environment).

The real-engine runs are in tests/test_docker_runs.py and tests/test_secret_hygiene.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.infra.conformance import RUN_KEY, SECRET_ENV, SECRET_VALUE, TargetConformance, items_argument
from tests.infra.mocking import ProgramRun
from toolkit import settings
from toolkit.errors import ConfigError
from toolkit.targets.docker.target import DockerTarget

CONTAINER = "docker:index/container:Container"
STORAGE = "toolkit:index:RunStorage"


class TestDockerTarget(TargetConformance):
    target_cls = DockerTarget
    sample_variables = {"env": {"MODE": "fast"}, "mem_limit": "512m", "cpus": 1.5, "user": "1234:1234"}
    job_type = CONTAINER
    expected_resources = {(STORAGE, "run-directory"), (CONTAINER, "job")}

    @property
    def expected_exports(self) -> dict[str, Any]:  # type: ignore[override]
        return {"container_id": "job-id", "run_dir": str(settings.home() / "work" / self.run_id)}

    def test_watcher_builds_from_program_exports(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an engine: the watcher's client is a stand-in whose log stream is already over."""
        client = SimpleNamespace(api=SimpleNamespace(logs=lambda *_args, **_kwargs: iter(())))
        monkeypatch.setattr("toolkit.targets.docker.target._docker_client", lambda: client)
        super().test_watcher_builds_from_program_exports()

    def test_a_maps_watcher_follows_each_worker_the_program_made(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = SimpleNamespace(api=SimpleNamespace(logs=lambda *_args, **_kwargs: iter(())))
        monkeypatch.setattr("toolkit.targets.docker.target._docker_client", lambda: client)
        super().test_a_maps_watcher_follows_each_worker_the_program_made()

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        containers = run.of_type(CONTAINER)
        assert len({c.inputs["name"] for c in containers}) == len(containers)
        counts = {items_argument(c.inputs["command"]) for c in containers}
        assert len(counts) == 1
        return counts.pop(), len(containers)

    def test_secrets_reach_the_job_as_a_file_owned_by_its_user_never_as_container_env(self) -> None:
        run = self.program(self.sample())
        container = run.one(CONTAINER)
        assert container.inputs["envs"] == ["MODE=fast"]  # what `docker inspect` shows
        assert container.inputs["command"][-4:] == [
            "--storage",
            "/toolkit-run",
            "--secrets",
            "/toolkit-run/secrets.json",
        ]
        storage = run.one(STORAGE)
        assert storage.inputs["secrets"] == {"TOOLKIT_RUN_KEY": RUN_KEY, SECRET_ENV: SECRET_VALUE}
        assert storage.secret_paths() - {"__provider"} == {"secrets.TOOLKIT_RUN_KEY", f"secrets.{SECRET_ENV}"}
        assert storage.inputs["secrets_owner"] == "1234:1234" == container.inputs["user"]

    @pytest.mark.parametrize("user", ["toolkit", "toolkit:toolkit", "1000:staff"])
    def test_a_user_by_name_is_refused_with_the_numeric_form(self, user: str) -> None:
        with pytest.raises(ConfigError, match=r"must be numeric 'uid:gid' \(e.g. '1000:1000'\)"):
            self.target.parse_job(self.render({"user": user})[0], "test-pool")
