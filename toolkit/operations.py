"""Pulumi operations on a run stack, each exactly one CLI process.

The Automation API's ``Stack.up`` follows ``pulumi up`` with ``stack output``
twice and ``stack history`` (for its ``UpResult``), ``Stack.destroy`` adds
another ``stack history``, and creating a ``Stack`` runs ``stack init`` or
``stack select``. Every one of those processes starts the engine, opens the
backend and derives the passphrase key (PBKDF2, 1,000,000 rounds), and a run
needs none of them: the stack's outputs are in the engine's own event for the
stack resource, which the update streams to us anyway.

``OperationStack`` is an ``auto.Stack`` that runs an operation the way the SDK
does -- the same command line, the inline program served by the SDK's
``LanguageServer`` (``--client``), events over the SDK's event log
(``--event-log``) -- and returns the outputs from that event stream. Built on
the SDK's internals (``LanguageServer``, ``_setup_event_log``,
``_run_pulumi_cmd_sync``, ``_cleanup``), so it stays exactly what the pinned
``pulumi`` package does, minus the extra processes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from pulumi import automation as auto
from pulumi.automation._server import LanguageServer
from pulumi.automation._stack import ExecKind, StackInitMode, _cleanup
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import language_pb2_grpc

STACK_TYPE = "pulumi:pulumi:Stack"
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"
"""Key that marks a secret in engine events, which carry a placeholder instead of its value."""

OnEvent = Callable[[auto.EngineEvent], None]


@dataclass
class OperationResult:
    """What the engine reported about one operation."""

    outputs: dict[str, Any] = field(default_factory=dict)
    """The stack's outputs (plain values; a secret arrives as the engine's masked placeholder)."""
    changes: dict[str, int] = field(default_factory=dict)
    """Resource steps by kind (``create``, ``delete``, ...), the stack resource included."""


class OperationStack(auto.Stack):
    """A stack that already exists in the backend; no CLI call on construction."""

    def __init__(self, name: str, workspace: auto.LocalWorkspace) -> None:
        # Not super().__init__: it runs `stack init` or `stack select`.
        self.name = name
        self.workspace = workspace
        self._mode = StackInitMode.SELECT

    def operate(self, args: list[str], on_event: OnEvent) -> OperationResult:
        """Run ``pulumi <args>`` on this stack with the workspace's inline program.

        Returns the stack's outputs and the step counts, both from the engine's
        events. Raises the SDK's ``CommandError`` subclasses, as ``Stack.up`` would.
        """
        result = OperationResult()

        def collect(event: auto.EngineEvent) -> None:
            done = event.res_outputs_event
            if done and done.metadata.type == STACK_TYPE and done.metadata.new is not None:
                result.outputs = dict(done.metadata.new.outputs or {})
            if event.summary_event:
                result.changes = {str(op): count for op, count in (event.summary_event.resource_changes or {}).items()}
            on_event(event)

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
        language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageServer(self.workspace.program), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        log_file, watcher, stop, temp_dir, events_server = self._setup_event_log(
            args[0], collect, self.workspace.pulumi_version
        )
        command = [*args, f"--client=127.0.0.1:{port}", "--exec-kind", ExecKind.INLINE.value, "--event-log", log_file]
        try:
            self._run_pulumi_cmd_sync(command, on_output=lambda _line: None)
        finally:
            _cleanup(temp_dir, watcher, stop, lambda: server.stop(0), events_server)
        return result


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIGNATURE in value
