"""The dynamic-provider plugin: a working provider server, started without ``pulumi.automation``,
gone as soon as the engine interrupts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from toolkit.providers.local_process import LocalProcessProvider
from toolkit.providers.run_storage import RunItemsProvider, RunStorageProvider
from toolkit.toolchain.shim import install_shim


def test_deferred_package_loads_on_first_use_only() -> None:
    check = textwrap.dedent(
        """
        import sys
        from toolkit.toolchain.dynamic_provider import defer
        defer("pulumi.automation")
        import pulumi, pulumi.dynamic, pulumi.automation.events
        assert "pulumi.automation._stack" not in sys.modules, "imported eagerly"
        from pulumi.automation import LocalWorkspace
        assert LocalWorkspace.__module__ == "pulumi.automation._local_workspace"
        assert pulumi.automation.create_stack and "pulumi.automation._stack" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=120)


@pytest.mark.parametrize("attempt", range(3))  # the interrupt lands on any of its threads: try a few
def test_plugin_serves_then_exits_at_the_engines_interrupt(tmp_path: Path, attempt: int) -> None:
    shim, _ = install_shim(tmp_path)
    plugin = subprocess.Popen(
        [str(shim), "127.0.0.1:1"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PULUMI_PYTHON_CMD": sys.executable},
        start_new_session=True,  # the engine interrupts the plugin's process group, as here
    )
    try:
        port = int(plugin.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = provider_pb2_grpc.ResourceProviderStub(channel).GetPluginInfo(empty_pb2.Empty(), timeout=60)
        assert info.version  # the SDK's dynamic provider answers
        os.killpg(plugin.pid, signal.SIGINT)
        assert plugin.wait(timeout=60) == 0
    finally:
        if plugin.poll() is None:
            os.killpg(plugin.pid, signal.SIGKILL)


PROBE = textwrap.dedent(
    """
    import sys
    from pulumi.dynamic import CreateResult, ResourceProvider
    from pulumi.dynamic.dynamic import serialize_provider

    class ModulesProbe(ResourceProvider):  # in __main__: dill ships the class by value
        def create(self, props):
            import sys
            return CreateResult("probe", {"modules": sorted(sys.modules)})

    print(serialize_provider(ModulesProbe()))
    """
)


def _struct(values: dict) -> struct_pb2.Struct:
    found = struct_pb2.Struct()
    found.update(values)
    return found


def test_the_plugin_process_defers_pulumi_automation_and_never_imports_pydantic(tmp_path: Path) -> None:
    """What the module docstring of ``toolkit.toolchain.dynamic_provider`` promises, read from the plugin process's own
    ``sys.modules`` after it unpickled each of the toolkit's providers, as the engine's Check of a run stack makes it."""
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    shim, _ = install_shim(tmp_path)
    plugin = subprocess.Popen(
        [str(shim), "127.0.0.1:1"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PULUMI_PYTHON_CMD": sys.executable},
        start_new_session=True,
    )
    try:
        port = int(plugin.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            for provider in (LocalProcessProvider(), RunStorageProvider(), RunItemsProvider()):
                news = _struct({"__provider": serialize_provider(provider)})
                urn = f"urn:pulumi:run::toolkit-runs::pulumi-python:dynamic:Resource::{type(provider).__name__}"
                stub.Check(provider_pb2.CheckRequest(urn=urn, olds=_struct({}), news=news), timeout=60)
            created = stub.Create(provider_pb2.CreateRequest(
                urn="urn:pulumi:run::toolkit-runs::pulumi-python:dynamic:Resource::probe",
                properties=_struct({"__provider": probe.stdout.strip()}),
            ), timeout=60)
        modules = set(created.properties["modules"])
    finally:
        os.killpg(plugin.pid, signal.SIGINT)
        plugin.wait(timeout=60)
    # The providers were unpickled in this very process ...
    assert {"toolkit.providers.local_process", "toolkit.providers.run_storage"} <= modules
    # ... and pulumi.automation is still the deferred stand-in: none of its modules ran.
    assert "pulumi.automation" in modules
    assert not {name for name in modules if name.startswith("pulumi.automation.")}, sorted(modules)
    heavy = {name for name in modules if name.partition(".")[0] in ("pydantic", "pydantic_core", "fsspec")}
    assert not heavy and not {name for name in modules if name.startswith("toolkit.infra")}, sorted(heavy)
