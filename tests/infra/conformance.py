"""Conformance tests every target inherits (as fsspec's abstract test suites).

A target's test module subclasses ``TargetConformance``, sets ``target_cls``
and ``sample_variables`` (valid overrides that exercise its job variables, with
a secret env value under ``SECRET_ENV``), and adds its own target-specific
assertions. Everything here runs the real template, validation and Pulumi
program, the program under ``pulumi.runtime.set_mocks``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.infra.mocking import SECRET_SIG_KEY, MockOutputs, ProgramRun, run_program
from toolkit import templating
from toolkit.bundles import BUNDLE_NAME, FILES_NAME
from toolkit.errors import ConfigError
from toolkit.infra import flow
from toolkit.infra.base import Target
from toolkit.infra.image_registry import ImageRegistry
from toolkit.infra.run import FanOut, RunContext
from toolkit.infra.watch import JobWatcher, WorkersWatcher
from toolkit.secretvalues import Secret

SECRET_ENV = "API_TOKEN"
BUNDLE = "/tmp/toolkit-test-bundle.tkb"
FILES = "/tmp/toolkit-test-files.tgz"
ITEMS = "/tmp/toolkit-test-items"
BUCKET_TYPES = frozenset(
    {
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketV2:BucketV2",
        "gcp:storage/bucket:Bucket",
        "azure-native:storage:StorageAccount",
        "azure-native:storage:BlobContainer",
    }
)
"""Resources that make storage of their own: a run of a shared-prefix pool makes none of them."""
SECRET_VALUE = "s3cr3t-value-never-in-plaintext"
RUN_KEY = "run-key-0123456789abcdef-never-in-plaintext"


def items_argument(command: list[str]) -> int:
    """The item count a map's runner command names (``--items N``)."""
    return int(command[command.index("--items") + 1])


def _identity(watcher: JobWatcher) -> tuple[Any, ...]:
    """What a watcher follows: its plain attribute values (ids, names, paths), not its clients."""
    return tuple(sorted((str(value) for value in vars(watcher).values() if isinstance(value, (str, int, Path)))))


def _flat_values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [value for child in node.values() for value in _flat_values(child)]
    if isinstance(node, list):
        return [value for child in node for value in _flat_values(child)]
    return [str(node)]


def _strip_secrets(node: Any) -> Any:
    if isinstance(node, dict):
        if SECRET_SIG_KEY in node:
            return "[secret]"
        return {key: _strip_secrets(value) for key, value in node.items() if key != "__provider"}
    if isinstance(node, list):
        return [_strip_secrets(value) for value in node]
    return node


def _without(node: Any, keys: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {key: _without(value, keys) for key, value in node.items() if key not in keys}
    if isinstance(node, list):
        return [_without(value, keys) for value in node]
    return node


class TargetConformance:
    target_cls: ClassVar[type[Target]]
    sample_variables: ClassVar[dict[str, Any]] = {}
    pool_storage_url: ClassVar[str | None] = None
    """Set for targets that need a pool storage URL (shared-prefix mode)."""
    mock_outputs: ClassVar[dict[str, MockOutputs]] = {}
    mock_calls: ClassVar[dict[str, dict[str, Any]]] = {}
    """Results of provider functions (invokes) by token, e.g. a project's number."""
    run_id: ClassVar[str] = "0123abcd4567"
    expected_resources: ClassVar[set[tuple[str, str]]]
    """Every ``(type, logical name)`` the program registers for ``sample()``: no more, no fewer."""
    expected_exports: ClassVar[dict[str, Any]]
    """The stack outputs the program exports for ``sample()`` under ``mock_outputs``."""
    job_type: ClassVar[str]
    """The job resource, as the platform shows it to whoever may list jobs (`docker inspect`, the Job ...)."""
    attempt_type: ClassVar[str | None] = None
    """The resource a new attempt replaces (``toolkit.retries``), when not ``job_type`` itself."""
    write_only_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields of ``job_type`` whose values the platform never shows back (ACI's ``secureValue``)."""
    shared_prefix_url: ClassVar[str] = "/tmp/toolkit-pool-storage/runs"
    """A pool ``storage.url`` in ``shared-prefix`` mode that this target's jobs can reach."""

    # -- helpers -------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _no_signing_with_ambient_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The program under mocks registers the same resources whatever credentials the machine has (an
        emulator fixture's, a developer's): it signs no storage requests here (tests/infra/test_signed_jobs.py
        runs the signed path per target)."""
        monkeypatch.setattr(flow, "sign_run", lambda *_args, **_kwargs: None)

    @property
    def target(self) -> Target:
        return self.target_cls()

    def render(self, *layers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        runtime = {"run_id": self.run_id, "pool_name": "test-pool", "function_name": "train"}
        return templating.render_job(self.target, self.target.default_template(), list(layers), runtime, "test-pool")

    def context(self, *layers: dict[str, Any], attempt: int = 1) -> RunContext:
        config, _ = self.render(*layers)
        url, shared = self.target.storage_url(self.run_id, self.pool_storage_url)
        return RunContext(
            run_id=self.run_id,
            pool_name="test-pool",
            function_name="train",
            job=self.target.parse_job(config, "test-pool"),
            storage_url=url,
            storage_options={},
            bundle_path=Path(BUNDLE),
            run_key=RUN_KEY,
            shared_storage=shared,
            attempt=attempt,
        )

    def sample(self) -> dict[str, Any]:
        variables = copy.deepcopy(self.sample_variables)
        variables.setdefault("env", {})
        variables["env"][SECRET_ENV] = Secret(SECRET_VALUE)
        return variables

    def program(self, *layers: dict[str, Any]) -> ProgramRun:
        context = self.context(*layers)
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)

    map_items: ClassVar[int] = 25
    map_parallelism: ClassVar[int] = 7
    map_workers_are_jobs: ClassVar[bool] = True
    """Whether a map's workers are jobs of their own, each followed (containers, processes, tasks), or one job
    resource runs them all (a Cloud Run execution, a custom job)."""

    def map_context(self, *layers: dict[str, Any]) -> RunContext:
        """A map of ``map_items`` items, ``map_parallelism`` at once (the staged items are never read here)."""
        fanout = FanOut(count=self.map_items, parallelism=self.map_parallelism, items_path=Path(ITEMS))
        return dataclasses.replace(self.context(*layers), fanout=fanout)

    def map_program(self, *layers: dict[str, Any]) -> ProgramRun:
        context = self.map_context(*layers)
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)

    def shared_prefix_program(self) -> ProgramRun:
        """A map with ``include_files`` on a pool whose storage is a shared prefix."""
        url, shared = self.target.storage_url(self.run_id, self.shared_prefix_url)
        context = dataclasses.replace(
            self.map_context(self.sample()), storage_url=url, shared_storage=shared, files_path=Path(FILES)
        )
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)

    def map_shape(self, run: ProgramRun) -> tuple[int, int]:
        """``(items, parallelism)`` as the map's rendered job resource(s) carry them."""
        raise NotImplementedError(f"{type(self).__name__} must say where its map's shape is rendered")

    # -- the contract -------------------------------------------------------------

    def test_default_template_is_strict_and_valid(self) -> None:
        templating.check_template(self.target.default_template(), where=self.target_cls.name)

    def test_default_template_renders_to_a_valid_job(self) -> None:
        config, _ = self.render()
        self.target.parse_job(config, "test-pool")

    def test_sample_variables_render_to_a_valid_job(self) -> None:
        config, variables = self.render(self.sample())
        self.target.parse_job(config, "test-pool")
        for name in self.sample_variables:
            assert name in variables

    def test_misspelled_variable_names_the_closest_match(self) -> None:
        names = sorted(self.target.default_template()["variables"]["properties"])
        real = max(names, key=len)
        typo = real[:-1] + ("x" if real[-1] != "x" else "y")
        with pytest.raises(ConfigError) as info:
            self.render({typo: "1"})
        assert repr(typo) in str(info.value) and f"Did you mean {real!r}" in str(info.value)

    def test_wrong_type_names_variable_type_and_value(self) -> None:
        with pytest.raises(ConfigError) as info:
            self.render({"env": ["not", "a", "mapping"]})
        message = str(info.value)
        assert "'env'" in message and "object" in message and "['not', 'a', 'mapping']" in message

    def test_program_registers_exactly_the_expected_resources(self) -> None:
        run = self.program(self.sample())
        registered = sorted((r.type, r.name) for r in run.resources)
        assert registered == sorted(self.expected_resources)

    def test_run_key_and_secret_env_never_travel_in_plaintext(self) -> None:
        run = self.program(self.sample())
        plaintext = json.dumps([_strip_secrets(r.raw) for r in run.resources])
        assert RUN_KEY not in plaintext
        assert SECRET_VALUE not in plaintext
        raw = json.dumps([r.raw for r in run.resources])
        assert SECRET_SIG_KEY in raw, "nothing was registered as a Pulumi secret"

    def test_the_job_as_its_platform_shows_it_holds_no_secret_value(self) -> None:
        """Not even as a Pulumi secret: encrypted in state, it would still be plain text in the platform's API."""
        job = self.program(self.sample()).one(self.job_type)
        shown = json.dumps(_without(job.inputs, self.write_only_fields))
        assert RUN_KEY not in shown and SECRET_VALUE not in shown

    def test_watcher_builds_from_program_exports(self) -> None:
        context = self.context(self.sample())
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)
        assert run.exports == self.expected_exports
        watcher = self.target.watcher(context, run.exports)
        assert isinstance(watcher, JobWatcher)
        assert type(watcher).__module__ == type(self.target).__module__  # the target's own watcher

    def test_a_map_renders_its_item_count_and_parallelism(self) -> None:
        assert self.map_shape(self.map_program(self.sample())) == (self.map_items, self.map_parallelism)

    def test_a_maps_items_are_uploaded_to_run_storage_once(self) -> None:
        run = self.map_program(self.sample())
        uploads = [r for r in run.resources if r.type.startswith("toolkit:index:Run")
                   and r.inputs.get("items_path") == "/tmp/toolkit-test-items"]
        assert len(uploads) == 1, [(r.type, r.name) for r in run.resources]
        assert not any("toolkit-test-items" in json.dumps(r.inputs, default=str) for r in run.resources if r not in uploads)

    def test_a_shared_prefix_run_makes_no_bucket_and_uploads_under_its_prefix(self) -> None:
        """``storage.mode: shared-prefix``: the run's storage is ``<prefix>/<run-id>/`` of the pool's bucket.
        Nothing makes storage of its own; the bundle, the files archive and the map's items go there,
        and there is where the job looks for them."""
        run = self.shared_prefix_program()
        prefix = f"{self.shared_prefix_url}/{self.run_id}"
        assert [(r.type, r.name) for r in run.resources if r.type in BUCKET_TYPES] == []
        for staged in (BUNDLE, FILES, ITEMS):
            uploads = [r for r in run.resources if staged in json.dumps(r.inputs, default=str)]
            assert uploads, f"{staged} is not uploaded"
            assert [(r.name, r.inputs.get("url")) for r in uploads] == [(r.name, prefix) for r in uploads]
        jobs = run.of_type(self.job_type)
        assert jobs and all(prefix in json.dumps(job.inputs, default=str) for job in jobs)

    def test_a_maps_watcher_follows_each_worker_the_program_made(self) -> None:
        """The map's watcher follows what its program exported: one watcher of the target's own per worker when the
        workers are jobs of their own (``map_workers_are_jobs``), else the one job that runs them all; each follows a
        job no other follows, named in the exports."""
        context = self.map_context(self.sample())
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)
        watcher = self.target.watcher(context, run.exports)
        followed = watcher.workers if isinstance(watcher, WorkersWatcher) else [watcher]
        assert len(followed) == (self.map_parallelism if self.map_workers_are_jobs else 1), followed
        assert all(isinstance(w, JobWatcher) and type(w).__module__ == type(self.target).__module__ for w in followed)
        identities = [_identity(w) for w in followed]
        assert len(set(identities)) == len(identities), identities  # no two watch the same worker
        exported = set(_flat_values(run.exports))
        assert all(exported & set(identity) for identity in identities), (identities, run.exports)

    def test_retries_reach_the_platform_or_replace_only_the_job(self) -> None:
        """``retries``: a target whose controller retries gets it in its own setting
        (``assert_native_retries``); any other replaces exactly its job resource on a new attempt."""
        native = self.target_cls.native_retries
        if native:
            config, variables = self.render(self.sample(), {native: 0, "retries": 3})
            assert variables[native] == 3
            run = self.program_of(config)
            self.assert_native_retries(run, 3)
            assert not [r.name for r in run.resources if "replacementTrigger" in r.options]  # never re-run
            return
        context = self.context(self.sample(), {"retries": 3}, attempt=2)
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)
        triggered = {r.type: r.options.get("replacementTrigger") for r in run.resources if "replacementTrigger" in r.options}
        assert triggered == {self.attempt_type or self.job_type: 2}

    def test_a_maps_fresh_job_replaces_only_its_workers(self) -> None:
        """A map whose job left items without a result goes ``up`` again with the attempt raised:
        exactly its workers are replaced, so new ones claim those items (``MapFuture._run_attempts``)."""
        context = dataclasses.replace(self.map_context(self.sample(), {"retries": 1}), attempt=2)
        if self.target.retried_natively(context.fanout):
            return  # its controller retries each index itself; the engine never re-runs the job
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)
        triggered = [(r.type, r.options["replacementTrigger"]) for r in run.resources if "replacementTrigger" in r.options]
        assert triggered and set(triggered) == {(self.attempt_type or self.job_type, 2)}, triggered

    def assert_native_retries(self, run: ProgramRun, retries: int) -> None:
        """Targets with ``native_retries``: ``retries`` reached the job resource's own setting."""
        raise NotImplementedError(f"{self.target_cls.name} retries natively: assert where `retries` lands")

    def program_of(self, config: dict[str, Any]) -> ProgramRun:
        context = self.context()
        context = dataclasses.replace(context, job=self.target.parse_job(config, "test-pool"))
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)

    def test_declared_plugins_are_the_providers_the_program_uses(self) -> None:
        from toolkit.toolchain.plugins import specs_of

        run = self.program(self.sample())
        # dynamic resources and the toolkit's own provider (toolkit/providers/server.py): no plugin to obtain
        used = {r.type.split(":")[0] for r in run.resources} - {"pulumi", "pulumi-python", "toolkit"}
        used |= {r.type.split(":")[2] for r in run.resources if r.type.startswith("pulumi:providers:")}
        assert {spec.name for spec in specs_of(self.target_cls.plugin_packages)} == used


DIGEST = "sha256:" + "d1" * 32


class RemoteEnvironmentConformance(TargetConformance):
    """What every target whose jobs pull their environment image from the pool's registry must do.

    A subclass names an ``image_registry`` of its cloud (``pull_registry``) and says where its job
    resource holds the image (``job_image``) and which files its run storage receives
    (``uploaded_names``); its own tests assert the pull permission of that cloud.
    """

    pull_registry: ClassVar[dict[str, Any]]
    reaches_loopback: ClassVar[bool] = False
    """Whether jobs may run on the caller's machine (a local cluster), so a loopback registry is allowed."""

    def job_image(self, run: ProgramRun) -> str:
        raise NotImplementedError(f"{type(self).__name__} must say where its job resource holds the image")

    def uploaded_names(self, run: ProgramRun) -> set[str]:
        raise NotImplementedError(f"{type(self).__name__} must say which files its run storage receives")

    @property
    def registry(self) -> ImageRegistry:
        return ImageRegistry.model_validate(self.pull_registry)

    def reference(self) -> str:
        return f"{self.registry.repository}@{DIGEST}"

    def environment_context(self, *layers: dict[str, Any], files: bool = False) -> RunContext:
        """A run whose environment image was pushed to the pool's registry (and, optionally, with files)."""
        return dataclasses.replace(
            self.context(*layers),
            image=self.reference(),
            image_registry=self.registry,
            files_path=Path(FILES) if files else None,
        )

    def environment_program(self, *layers: dict[str, Any], files: bool = False) -> ProgramRun:
        context = self.environment_context(*layers, files=files)
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs, calls=self.mock_calls)

    def test_the_job_runs_the_pushed_image_by_digest(self) -> None:
        run = self.environment_program(self.sample())
        assert self.job_image(run) == self.reference()
        assert f"{self.registry.repository}:" not in json.dumps([r.inputs for r in run.resources], default=str)

    def test_without_an_environment_the_job_runs_the_pools_image(self) -> None:
        run = self.program(self.sample())
        assert self.job_image(run) == self.sample_variables["image"]

    def test_the_environments_base_is_the_pools_image(self) -> None:
        config, _ = self.render(self.sample())
        assert self.target.environment_base(self.target.parse_job(config, "test-pool")) == self.sample_variables["image"]

    def test_include_files_travel_next_to_the_bundle(self) -> None:
        assert FILES_NAME not in self.uploaded_names(self.program(self.sample()))
        assert {BUNDLE_NAME, FILES_NAME} <= self.uploaded_names(self.environment_program(self.sample(), files=True))

    def test_environment_variables_are_accepted_and_stay_out_of_the_job(self) -> None:
        config, variables = self.render(self.sample(), {"packages": ["six==1.16.0"], "include_files": ["data/*.csv"]})
        assert variables["packages"] == ["six==1.16.0"] and variables["include_files"] == ["data/*.csv"]
        text = json.dumps(config, default=str)
        assert "six==1.16.0" not in text and "data/*.csv" not in text

    def test_a_loopback_registry_is_refused_unless_the_jobs_can_reach_it(self) -> None:
        config, _ = self.render(self.sample())
        job = self.target.parse_job(config, "test-pool")
        loopback = ImageRegistry(url="127.0.0.1:5000/toolkit")
        if self.reaches_loopback:
            self.target.check_image_registry(loopback, job, "test-pool")
            return
        with pytest.raises(ConfigError, match="loopback interface"):
            self.target.check_image_registry(loopback, job, "test-pool")
