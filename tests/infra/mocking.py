"""Run a target's Pulumi program under ``pulumi.runtime.set_mocks`` and record what it registers.

The recording keeps each resource's inputs twice: deserialized (for asserting
values) and raw (for asserting which values travel as Pulumi secrets).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import pulumi
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def unwrap_secrets(node: Any) -> Any:
    """Plain values: the deserializer wraps secret-containing values in secret envelopes."""
    if isinstance(node, dict):
        if node.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE:
            return unwrap_secrets(node.get("value"))
        return {key: unwrap_secrets(value) for key, value in node.items()}
    if isinstance(node, list):
        return [unwrap_secrets(value) for value in node]
    return node


@dataclass
class MockedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    raw: dict[str, Any]
    id: str = ""
    extra_outputs: dict[str, Any] = field(default_factory=dict)
    """What the mocks returned beyond the echoed inputs (ARNs, version numbers ...)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Resource options the engine would see (``replacementTrigger``, ``deleteBeforeReplace`` ...)."""

    def secret_paths(self) -> set[str]:
        """Dotted paths of inputs that were registered as Pulumi secrets."""
        found: set[str] = set()

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                if node.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE:
                    found.add(path)
                    return
                for key, value in node.items():
                    walk(value, f"{path}.{key}" if path else key)
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    walk(value, f"{path}.{index}")

        walk(self.raw, "")
        return found


MockOutputs = Union[dict[str, Any], Callable[[pulumi.runtime.MockResourceArgs], dict[str, Any]]]
"""Extra outputs of one resource type: fixed, or computed from the resource's name and inputs."""


def secret_version_outputs(project_number: str) -> Callable[[pulumi.runtime.MockResourceArgs], dict[str, Any]]:
    """Outputs of a ``gcp.secretmanager.SecretVersion`` with a number of its own (not "1" for all)
    and a name that names its secret, as Secret Manager's ``projects/N/secrets/S/versions/V``."""

    def outputs(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
        number = str(1 + zlib.crc32(args.name.encode()) % 997)
        return {"version": number, "name": f"projects/{project_number}/secrets/{args.inputs['secret']}/versions/{number}"}

    return outputs


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Echoes inputs as outputs (plus ``<name>-id`` ids and per-type extras), records every registration.

    Extras that identify a resource (an ARN, a secret version) should be computed per
    resource, so a program that wires the wrong one into a job cannot pass a test.
    """

    resources: list[MockedResource] = field(default_factory=list)
    outputs: dict[str, MockOutputs] = field(default_factory=dict)
    """Extra outputs by resource type (e.g. an ARN), merged into the echoed state."""
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Results of provider functions by token (e.g. ``gcp:organizations/getProject:getProject``)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id = f"{args.name}-id"
        extra = self.outputs.get(args.typ, {})
        extra = extra(args) if callable(extra) else extra
        inputs = unwrap_secrets(dict(args.inputs))
        self.resources.append(MockedResource(args.typ, args.name, inputs, {}, resource_id, dict(extra)))
        return resource_id, {**args.inputs, **extra}

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return self.calls.get(args.token, {})


class _RecordingMonitor(MockMonitor):
    """Keeps each registration's raw property struct, where secrets are still marked."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.raw: dict[tuple[str, str], dict[str, Any]] = {}
        self.options: dict[tuple[str, str], dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC name
        self.raw[(request.type, request.name)] = json_format.MessageToDict(request.object)
        options = json_format.MessageToDict(request)
        options.pop("object", None)
        self.options[(request.type, request.name)] = options
        return super().RegisterResource(request)


@dataclass
class ProgramRun:
    resources: list[MockedResource]
    exports: dict[str, Any]

    def of_type(self, type_: str) -> list[MockedResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> MockedResource:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, got {[r.name for r in found]} of {self.types()}"
        return found[0]

    def types(self) -> list[str]:
        return sorted(r.type for r in self.resources)


def run_program(
    program: Any, outputs: dict[str, MockOutputs] | None = None, calls: dict[str, dict[str, Any]] | None = None
) -> ProgramRun:
    """Run ``program()`` under mocks; returns every registered resource and the stack exports."""
    mocks = RecordingMocks(outputs=outputs or {}, calls=calls or {})
    monitor = _RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor)
    exports: dict[str, Any] = {}
    resolved: dict[str, Any] = {}
    original_export = pulumi.export
    pulumi.export = exports.__setitem__
    try:

        @pulumi.runtime.test
        def run() -> Any:
            program()
            names = list(exports)
            values = [pulumi.Output.from_input(exports[name]) for name in names]
            return pulumi.Output.all(*values).apply(lambda vals: resolved.update(zip(names, vals)))

        run()
    finally:
        pulumi.export = original_export
    for resource in mocks.resources:
        resource.raw = monitor.raw.get((resource.type, resource.name), {})
        resource.options = monitor.options.get((resource.type, resource.name), {})
    return ProgramRun(mocks.resources, resolved)
