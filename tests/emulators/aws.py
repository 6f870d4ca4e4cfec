"""An AWS API emulator for tests: moto's server on loopback, started by the tests themselves.

Import the fixtures explicitly (``from tests.emulators.aws import aws, aws_emulator``)
and request them with ``pytest.mark.usefixtures``.
``aws_emulator`` starts one server per test module and points boto3, botocore
and s3fs at it through ``AWS_ENDPOINT_URL`` with dummy credentials, so code
under test builds its clients exactly as it would against AWS. ``aws`` resets
the emulator's state before each test. ``ecs_cluster`` adds a cluster with one
registered EC2 container instance (moto cannot run Fargate tasks in
``awsvpc`` mode, but places EC2 tasks on registered instances).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator

import boto3
import pytest
import s3fs
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

REGION = "us-east-1"
CLUSTER = "toolkit-test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def moto_api(path: str, body: dict[str, object] | None = None) -> None:
    """POST to the running emulator's own control API (reset, state transitions)."""
    data = json.dumps(body or {}).encode()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    request = urllib.request.Request(f"{endpoint}/moto-api/{path}", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


class _OneRequestAtATime:
    """moto's S3 checks ``If-None-Match: *`` and then writes, as two steps another request can come
    between, so two racing conditional creates may both succeed; S3 itself makes each one atomic.
    Serving one request at a time gives the emulator that guarantee, which the claim tests rely on."""

    def __init__(self, app: DomainDispatcherApplication) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response):  # noqa: ANN204 - WSGI
        with self.lock:
            return list(self.app(environ, start_response))


class SerialMotoServer(ThreadedMotoServer):
    """moto's threaded server with its requests serialized (``_OneRequestAtATime``)."""

    def _server_entry(self) -> None:
        app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True)
        self._server_ready_event.set()
        self._server.serve_forever()


@pytest.fixture(scope="module")
def aws_emulator() -> Iterator[str]:
    """The emulator's endpoint URL; the process environment points every AWS client at it."""
    server = SerialMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/toolkit-test-aws-config")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/toolkit-test-aws-credentials")
        try:
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


@pytest.fixture
def aws(aws_emulator: str) -> str:
    """The emulator, emptied: each test starts with no buckets, clusters or logs."""
    moto_api("reset")
    s3fs.S3FileSystem.clear_instance_cache()  # cached filesystems keep old connections and listings
    return aws_emulator


@functools.cache
def _machine_image(endpoint: str) -> str:
    """An AMI of the emulator's fixed catalogue (listing it is slow, and a reset keeps it)."""
    return str(boto3.client("ec2", region_name=REGION).describe_images()["Images"][0]["ImageId"])


@pytest.fixture
def ecs_cluster(aws: str) -> str:
    """``CLUSTER``, with one registered EC2 container instance."""
    ecs = boto3.client("ecs", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    ecs.create_cluster(clusterName=CLUSTER)
    instance = ec2.run_instances(ImageId=_machine_image(aws), MinCount=1, MaxCount=1)["Instances"][0]
    ecs.register_container_instance(
        cluster=CLUSTER,
        instanceIdentityDocument=json.dumps({"instanceId": instance["InstanceId"], "region": REGION}),
    )
    return CLUSTER
