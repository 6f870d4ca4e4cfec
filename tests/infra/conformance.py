"""Conformance tests every target inherits (as fsspec's abstract test suites).

A target's test module subclasses ``TargetConformance``, sets ``target_cls``
and ``sample_variables`` (valid overrides that exercise its job variables, with
a secret env value under ``SECRET_ENV``), and adds its own target-specific
assertions. Everything here runs the real template, validation and Pulumi
program, the program under ``pulumi.runtime.set_mocks``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.infra.mocking import SECRET_SIG_KEY, ProgramRun, run_program
from toolkit import templating
from toolkit.errors import ConfigError
from toolkit.infra.base import RunContext, Target
from toolkit.secretvalues import Secret

SECRET_ENV = "API_TOKEN"
SECRET_VALUE = "s3cr3t-value-never-in-plaintext"
RUN_KEY = "run-key-0123456789abcdef-never-in-plaintext"


def _strip_secrets(node: Any) -> Any:
    if isinstance(node, dict):
        if SECRET_SIG_KEY in node:
            return "[secret]"
        return {key: _strip_secrets(value) for key, value in node.items() if key != "__provider"}
    if isinstance(node, list):
        return [_strip_secrets(value) for value in node]
    return node


class TargetConformance:
    target_cls: ClassVar[type[Target]]
    sample_variables: ClassVar[dict[str, Any]] = {}
    pool_storage_url: ClassVar[str | None] = None
    """Set for targets that need a pool storage URL (shared-prefix mode)."""
    mock_outputs: ClassVar[dict[str, dict[str, Any]]] = {}
    run_id: ClassVar[str] = "0123abcd4567"

    # -- helpers -------------------------------------------------------------------

    @property
    def target(self) -> Target:
        return self.target_cls()

    def render(self, *layers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        runtime = {"run_id": self.run_id, "pool_name": "test-pool", "function_name": "train"}
        return templating.render(
            self.target.default_template(), list(layers), runtime, "test-pool", self.target.customization_root
        )

    def context(self, *layers: dict[str, Any]) -> RunContext:
        config, _ = self.render(*layers)
        url, shared = self.target.storage_url(self.run_id, self.pool_storage_url)
        return RunContext(
            run_id=self.run_id,
            pool_name="test-pool",
            function_name="train",
            job=self.target.parse_job(config, "test-pool"),
            storage_url=url,
            storage_options={},
            bundle_path=Path("/tmp/toolkit-test-bundle.tkb"),
            run_key=RUN_KEY,
            shared_storage=shared,
        )

    def sample(self) -> dict[str, Any]:
        variables = copy.deepcopy(self.sample_variables)
        variables.setdefault("env", {})
        variables["env"][SECRET_ENV] = Secret(SECRET_VALUE)
        return variables

    def program(self, *layers: dict[str, Any]) -> ProgramRun:
        context = self.context(*layers)
        return run_program(lambda: self.target.program(context), outputs=self.mock_outputs)

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

    def test_program_registers_resources(self) -> None:
        run = self.program(self.sample())
        assert run.resources, "the program registered no resources"

    def test_run_key_and_secret_env_never_travel_in_plaintext(self) -> None:
        run = self.program(self.sample())
        plaintext = json.dumps([_strip_secrets(r.raw) for r in run.resources])
        assert RUN_KEY not in plaintext
        assert SECRET_VALUE not in plaintext
        raw = json.dumps([r.raw for r in run.resources])
        assert SECRET_SIG_KEY in raw, "nothing was registered as a Pulumi secret"

    def test_watcher_builds_from_program_exports(self) -> None:
        context = self.context(self.sample())
        run = run_program(lambda: self.target.program(context), outputs=self.mock_outputs)
        self.target.watcher(context, run.exports)

    def test_declared_plugins_are_the_providers_the_program_uses(self) -> None:
        from toolkit.toolchain.plugins import specs_of

        run = self.program(self.sample())
        used = {r.type.split(":")[0] for r in run.resources} - {"pulumi", "pulumi-python"}  # dynamic: no plugin
        used |= {r.type.split(":")[2] for r in run.resources if r.type.startswith("pulumi:providers:")}
        assert {spec.name for spec in specs_of(self.target_cls.plugin_packages)} == used
