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
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

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
