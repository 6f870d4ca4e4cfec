"""The ``toolkit`` resource provider: the toolkit's own resources over Pulumi's provider protocol.

Resources of type ``toolkit:index:<Name>`` (``PROVIDERS``) are created and
deleted by the classes of this package. The same server runs in two ways:

* resident: in the client process, started once (``resident.py``); every
  ``pulumi up`` and ``destroy`` the client runs attaches to it through
  ``PULUMI_DEBUG_PROVIDERS=toolkit:PORT`` instead of starting a plugin;
* as the plugin ``pulumi-resource-toolkit`` (``main``), which the engine starts
  when no resident one is attached: ``toolkit gc`` of a stack whose client is
  gone, a ``pulumi destroy`` by hand.

Nothing is configured per process, so one server serves any number of
concurrent runs on any pools: ``Configure`` takes no settings and a resource's
behaviour comes from its own inputs. ``Cancel``, which an interrupted CLI sends
to every provider it uses, does nothing: it must not reach other runs.
Standard library, grpc and the SDK's property (de)serialisation only, as the
plugin starts on the path of a run's teardown when there is no resident one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import empty_pb2
from pulumi.dynamic import ResourceProvider
from pulumi.runtime import proto, rpc
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import provider_pb2_grpc

from toolkit.providers.local_process import LocalProcessProvider
from toolkit.providers.run_storage import RunItemsProvider, RunStorageProvider

PACKAGE = "toolkit"
"""The provider's package name: resource types ``toolkit:index:<Name>``, plugin ``pulumi-resource-toolkit``."""
VERSION = "0.1.0"


def resource_token(name: str) -> str:
    """The type token of the provider's resource ``name``."""
    return f"{PACKAGE}:index:{name}"


PROVIDERS: dict[str, ResourceProvider] = {
    resource_token("RunStorage"): RunStorageProvider(),
    resource_token("RunItems"): RunItemsProvider(),
    resource_token("LocalProcess"): LocalProcessProvider(),
}
MAX_CONCURRENT_CALLS = 64
"""gRPC worker threads: a delete of a running job process may take seconds, and many runs share one server."""


def resource_type(urn: str) -> str:
    """``urn:pulumi:stack::project::parent$toolkit:index:X::name`` -> ``toolkit:index:X``."""
    return urn.split("::")[2].split("$")[-1]


PEER_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
"""Where Linux tells which user owns each local TCP connection."""


def peers_known() -> bool:
    """Whether this platform tells a loopback caller's user (Linux's connection tables; not macOS)."""
    return any(os.access(table, os.R_OK) for table in PEER_TABLES)


def peer_uid(peer: str, tables: tuple[str, ...] = PEER_TABLES) -> int | None:
    """The uid owning the local TCP connection ``peer`` (gRPC's ``ipv4:127.0.0.1:PORT``) came from, or None."""
    port = f"{int(peer.rsplit(':', 1)[1]):04X}"
    for table in tables:
        try:
            with open(table) as handle:
                rows = [line.split() for line in handle.readlines()[1:]]
        except OSError:
            continue
        for row in rows:
            if row[1].rsplit(":", 1)[1] == port and row[3] == "01":  # the peer's end, established
                return int(row[7])
    return None


def _provider(urn: str, context: grpc.ServicerContext, verify_peer: bool) -> ResourceProvider:
    """The provider of ``urn``'s type; with ``verify_peer``, for a caller of this process's own user only.

    The service listens on loopback, where any local user can connect, and a
    create runs a command: a connection from another user is refused.
    """
    if verify_peer and peer_uid(context.peer()) != os.geteuid():
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "the toolkit provider serves its own user's engines only")
    provider = PROVIDERS.get(resource_type(urn))
    if provider is None:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the toolkit provider has no resource type of {urn}")
    return provider  # type: ignore[return-value]  # abort raises


def _serialize(values: dict[str, Any]) -> Any:
    return asyncio.run(rpc.serialize_properties(values, {}))


def _unimplemented(context: grpc.ServicerContext, what: str) -> None:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not implemented by the toolkit provider")


class ToolkitProviderServicer(provider_pb2_grpc.ResourceProviderServicer):
    """The resource provider service; stateless, so safe to share between engines."""

    def __init__(self, verify_peers: bool) -> None:
        self.verify_peers = verify_peers
        """Refuse callers of other users (see ``_provider``); off where the platform cannot tell them."""

    def Handshake(self, request: Any, context: grpc.ServicerContext) -> Any:
        return proto.ProviderHandshakeResponse(accept_secrets=False, accept_resources=False, accept_outputs=False)

    def Attach(self, request: Any, context: grpc.ServicerContext) -> Any:
        return empty_pb2.Empty()

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return proto.PluginInfo(version=VERSION)

    def Configure(self, request: Any, context: grpc.ServicerContext) -> Any:
        return proto.ConfigureResponse(acceptSecrets=False, supportsPreview=False)

    def CheckConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        _unimplemented(context, "CheckConfig")

    def DiffConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        _unimplemented(context, "DiffConfig")

    def GetSchema(self, request: Any, context: grpc.ServicerContext) -> Any:
        _unimplemented(context, "GetSchema")

    def Invoke(self, request: Any, context: grpc.ServicerContext) -> Any:
        _unimplemented(context, f"Invoke of {request.tok}")

    def Cancel(self, request: Any, context: grpc.ServicerContext) -> Any:
        return empty_pb2.Empty()

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        _provider(request.urn, context, self.verify_peers)
        return proto.CheckResponse(inputs=request.news, failures=[])

    def Diff(self, request: Any, context: grpc.ServicerContext) -> Any:
        olds = rpc.deserialize_properties(request.olds, True)
        news = rpc.deserialize_properties(request.news, True)
        result = _provider(request.urn, context, self.verify_peers).diff(request.id, olds, news)
        fields: dict[str, Any] = {"changes": proto.DiffResponse.DIFF_UNKNOWN}
        if result.changes is not None:
            fields["changes"] = proto.DiffResponse.DIFF_SOME if result.changes else proto.DiffResponse.DIFF_NONE
        if result.replaces is not None:
            fields["replaces"] = result.replaces
        if result.delete_before_replace is not None:
            fields["deleteBeforeReplace"] = result.delete_before_replace
        return proto.DiffResponse(**fields)

    def Create(self, request: Any, context: grpc.ServicerContext) -> Any:
        provider = _provider(request.urn, context, self.verify_peers)
        if request.preview:  # a plan: nothing may happen (the engine asks because Handshake is answered)
            return proto.CreateResponse(properties=request.properties)
        props = rpc.deserialize_properties(request.properties)
        result = provider.create(props)
        return proto.CreateResponse(id=result.id, properties=_serialize(result.outs or {}))

    def Read(self, request: Any, context: grpc.ServicerContext) -> Any:
        _provider(request.urn, context, self.verify_peers)
        return proto.ReadResponse(id=request.id, properties=request.properties, inputs=request.inputs)

    def Update(self, request: Any, context: grpc.ServicerContext) -> Any:
        provider = _provider(request.urn, context, self.verify_peers)
        if request.preview:
            return proto.UpdateResponse(properties=request.news)
        olds = rpc.deserialize_properties(request.olds)
        news = rpc.deserialize_properties(request.news)
        result = provider.update(request.id, olds, news)
        return proto.UpdateResponse(properties=_serialize(result.outs or {}))

    def Delete(self, request: Any, context: grpc.ServicerContext) -> Any:
        props = rpc.deserialize_properties(request.properties)
        _provider(request.urn, context, self.verify_peers).delete(request.id, props)
        return empty_pb2.Empty()


def serve(address: str = "127.0.0.1:0") -> tuple[grpc.Server, int]:
    """Start the provider service on a local port; returns the server and its port.

    Callers of other users are refused where the platform tells them (``peers_known``). Elsewhere the
    service is as open as any Pulumi plugin on loopback, so only the engine-started plugin, which lives
    for one CLI process, runs there: ``resident.enabled`` keeps the long-lived one off.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_CONCURRENT_CALLS), options=_GRPC_CHANNEL_OPTIONS)
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(ToolkitProviderServicer(peers_known()), server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def main() -> None:
    """The plugin: print the port for the engine, serve until it interrupts the process group.

    SIGINT means the engine is done with the plugin (every call answered), so
    the process ends at once; job processes run in sessions of their own.
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGINT, lambda _signum, _frame: None)  # a handler, so the wake-up pipe is written
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    _server, port = serve()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    os.read(wake_read, 1)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
