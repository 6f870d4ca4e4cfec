"""The ``toolkit`` resource provider without an engine: its service, its caller check, the attach setting."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import provider_pb2_grpc

from toolkit.providers import resident, server
from toolkit.providers.local_process import LocalProcessProvider, running
from toolkit.providers.run_storage import RunStorageProvider


@pytest.fixture
def stub():
    service, port = server.serve()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield provider_pb2_grpc.ResourceProviderStub(channel)
    channel.close()
    service.stop(None)


def _storage_props(tmp_path: Path) -> dict:
    bundle = tmp_path / "staged"
    bundle.write_bytes(b"bundle")
    return {"url": str(tmp_path / "run"), "bundle_path": str(bundle), "options": {}, "mode": "700",
            "bundle_name": "bundle.bin", "secrets": {"TOKEN": "s3cr3t"}, "secrets_owner": None, "attempt": 1}


STORAGE_URN = "urn:pulumi:run-x::toolkit-runs::toolkit:index:RunStorage::run-directory"


def test_storage_is_created_without_echoing_secrets_and_deleted(stub, tmp_path: Path) -> None:
    properties = asyncio.run(rpc.serialize_properties(_storage_props(tmp_path), {}))
    created = stub.Create(proto.CreateRequest(urn=STORAGE_URN, properties=properties))
    outputs = rpc.deserialize_properties(created.properties)
    assert created.id == str(tmp_path / "run")
    assert "secrets" not in outputs and outputs["url"] == str(tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["bundle.bin", "secrets.json"]
    stub.Delete(proto.DeleteRequest(urn=STORAGE_URN, id=created.id, properties=created.properties))
    assert not (tmp_path / "run").exists()


def test_a_preview_creates_nothing(stub, tmp_path: Path) -> None:
    properties = asyncio.run(rpc.serialize_properties(_storage_props(tmp_path), {}))
    planned = stub.Create(proto.CreateRequest(urn=STORAGE_URN, properties=properties, preview=True))
    assert rpc.deserialize_properties(planned.properties)["url"] == str(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unknown_type_is_refused_by_name(stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Create(proto.CreateRequest(urn="urn:pulumi:s::p::toolkit:index:Nope::n"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "toolkit:index:Nope" in caught.value.details()


def test_another_users_connection_is_refused(stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "peer_uid", lambda _peer: os.geteuid() + 1)
    properties = asyncio.run(rpc.serialize_properties(_storage_props(tmp_path), {}))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Create(proto.CreateRequest(urn=STORAGE_URN, properties=properties))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not (tmp_path / "run").exists()


def test_without_connection_tables_only_the_per_process_plugin_serves_and_it_asks_no_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS has no /proc/net/tcp: the resident provider stays off (every CLI process starts the plugin,
    as with Pulumi's own plugins), and the plugin serves its engine instead of refusing every call."""
    monkeypatch.delenv("TOOLKIT_RESIDENT_PROVIDER", raising=False)
    monkeypatch.setattr(server, "PEER_TABLES", (str(tmp_path / "no-such-table"),))
    assert not server.peers_known()
    assert not resident.enabled() and resident.attach_env({}) == {}
    service, port = server.serve()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        properties = asyncio.run(rpc.serialize_properties(_storage_props(tmp_path), {}))
        created = provider_pb2_grpc.ResourceProviderStub(channel).Create(
            proto.CreateRequest(urn=STORAGE_URN, properties=properties)
        )
        assert created.id == str(tmp_path / "run")
    finally:
        channel.close()
        service.stop(None)


def test_with_connection_tables_the_resident_provider_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_RESIDENT_PROVIDER", raising=False)
    assert server.peers_known() and resident.enabled()  # Linux, where the suite runs


def test_peer_uid_reads_the_connection_table(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1\n"
        "   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1234        0 2\n"
        "   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 3\n"
    )
    assert server.peer_uid("ipv4:127.0.0.1:54321", (str(table),)) == 1234
    assert server.peer_uid("ipv4:127.0.0.1:54322", (str(table),)) is None


def test_resource_type_of_a_child_urn() -> None:
    urn = "urn:pulumi:run-x::toolkit-runs::pkg:index:Parent$toolkit:index:LocalProcess::job"
    assert server.resource_type(urn) == "toolkit:index:LocalProcess"


def test_attach_env_keeps_other_attached_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_RESIDENT_PROVIDER", raising=False)
    env = resident.attach_env({"PULUMI_DEBUG_PROVIDERS": "aws:1234,toolkit:1"})
    assert env == {"PULUMI_DEBUG_PROVIDERS": f"aws:1234,toolkit:{resident.port()}"}
    assert resident.port() == resident.port()  # served once per process
    monkeypatch.setenv("TOOLKIT_RESIDENT_PROVIDER", "0")
    assert resident.attach_env({}) == {}


def test_deleting_run_storage_stops_a_job_the_engine_never_recorded(tmp_path: Path) -> None:
    """A client killed between its provider starting a job and the engine hearing of it: the job is in no
    stack's state, its run directory is, and deleting that stops the job."""
    storage = RunStorageProvider()
    props = _storage_props(tmp_path)
    created = storage.create(props)
    job = LocalProcessProvider().create({"run_dir": props["url"], "argv": ["sleep", "600"], "env": {}})
    pid = int(job.id)
    assert running(pid)
    storage.delete(created.id, created.outs)
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)
    assert not (tmp_path / "run").exists()
