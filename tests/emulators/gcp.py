"""Google Cloud stand-ins on loopback: fake-gcs-server, and fakes of the REST methods the targets call.

``fake_gcs``: the real fake-gcs-server (github.com/fsouza/fake-gcs-server),
built from its Go module with ``go install`` into
``~/.cache/toolkit/emulators/`` on first use and started in memory mode on a
free port. If Go, the module proxy or the server fails, the fixture fails
with the reason: it never skips. fake-gcs-server checks no credentials, so
clients under test reach it through ``gcs_with_credentials``: a gate in front
of it that, as Cloud Storage does, takes a request only with the bearer token
the fake metadata server (``google_apis``) issued, or as a V4 signed URL whose
signature verifies against a service account key it was told to trust. gcsfs
then has to find and use Application Default Credentials, as a job on Google
Cloud does, and the toolkit's signed URLs have to be valid ones.

``google_apis``: one local HTTP server with the documented request/response
shapes of the methods the targets use, and their state rules:

* Vertex AI ``projects.locations.customJobs`` create/get/cancel/delete and
  ``projects.locations.operations.get``: names use the project *number*, jobs
  start ``JOB_STATE_PENDING``; cancel of a final job is ``FAILED_PRECONDITION``,
  otherwise the job goes ``JOB_STATE_CANCELLING`` then ``JOB_STATE_CANCELLED``
  (error code 1, CANCELLED); delete of a non-final job is
  ``FAILED_PRECONDITION``, otherwise it returns a long-running Operation
  (``DeleteOperationMetadata``) that is done on its next read.
* Cloud Run v2 ``jobs.run`` (an Operation whose metadata is the Execution),
  ``executions.get``/``cancel`` and ``executions.tasks.list``.
* Cloud Logging ``entries.list`` with the filter clauses the watchers send.
* Secret Manager ``versions.access``.
* The GCE metadata server (ping, project id, service account, token), for
  google-auth's Compute Engine credentials on the client and the job-side
  secret bootstrap. The fixture points google-auth at it (``GCE_METADATA_HOST``,
  ``GCE_METADATA_IP``) with no other credentials around, and every API route
  refuses a request without the bearer token the metadata server issued: the
  toolkit's real credential code runs in these tests.
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import hashlib
import http.client
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests

from tests.emulators.fakehttp import FakeHttpServer, Handler, Request, google_error

FAKE_GCS_MODULE = "github.com/fsouza/fake-gcs-server"
FAKE_GCS_VERSION = "v1.56.1"
PROJECT_NUMBER = "123456789012"
PROJECT_ID = "proj-1"
"""The project the fake metadata server says the job runs in."""

# gcsfs (2026.x) first asks the Storage Control API over gRPC+TLS for a bucket's layout; a plain-http
# emulator cannot answer, so every client would wait 60 s before falling back. Set before gcsfs is
# imported (test collection imports this module first); the runner subprocesses inherit it.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
TOKEN = "fake-access-token"
VERTEX_FINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


def emulator_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "toolkit" / "emulators"


@contextmanager
def installing(target: Path) -> Iterator[None]:
    """One installer of ``target`` at a time across test sessions (the cache is per machine, sessions are not):
    a second waits, then finds the first one's result."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0, verify: str | bool = True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"{what} exited with status {process.returncode} before serving:\n{output}")
        try:
            requests.get(url, timeout=1, verify=verify)
            return
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer on a loaded machine
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"{what} did not serve {url} within {timeout:g}s")


def fake_gcs_binary() -> Path:
    """Build fake-gcs-server from its Go module once; later runs reuse the binary."""
    bin_dir = emulator_cache() / f"fake-gcs-server-{FAKE_GCS_VERSION}"
    with installing(bin_dir):
        return _build_fake_gcs(bin_dir)


def _build_fake_gcs(bin_dir: Path) -> Path:
    binary = bin_dir / "fake-gcs-server"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.fail("the GCS emulator needs Go to build fake-gcs-server; install Go (e.g. apt-get install golang)")
    bin_dir.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [go, "install", f"{FAKE_GCS_MODULE}@{FAKE_GCS_VERSION}"],
        env={**os.environ, "GOBIN": str(bin_dir), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0 or not binary.exists():
        pytest.fail(
            f"building {FAKE_GCS_MODULE}@{FAKE_GCS_VERSION} failed (is the Go module proxy reachable?):\n"
            f"{build.stderr[-3000:]}"
        )
    return binary


@dataclass
class FakeGcs:
    """fake-gcs-server itself: what the Pulumi provider's side does (buckets, uploads), without credentials."""

    endpoint: str

    def create_bucket(self, name: str) -> None:
        response = requests.post(f"{self.endpoint}/storage/v1/b", params={"project": "test"}, json={"name": name})
        response.raise_for_status()

    def upload(self, bucket: str, name: str, data: bytes) -> None:
        """A media upload through the JSON API, as the Pulumi provider's BucketObject does."""
        response = requests.post(
            f"{self.endpoint}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": name},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        response.raise_for_status()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    binary = fake_gcs_binary()
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "error",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{endpoint}/storage/v1/b", process, "fake-gcs-server")
        yield FakeGcs(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class GatedGcs:
    """fake-gcs-server behind a gate that admits, as Cloud Storage does, a request with the metadata server's bearer
    token or a V4 signed URL whose signature verifies against a service account key the gate was told to trust."""

    url: str
    fake: FakeGcs
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    """``(method, path, why)`` of every request that reached the gate: ``why`` is "token", "signed" or the refusal."""
    signers: dict[str, Any] = field(default_factory=dict)
    """Public keys by service account email: whose signed URLs are honoured."""

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec (gcsfs) options for the gate: no token, so gcsfs uses Application Default Credentials."""
        return {"endpoint_url": self.url}

    def trust(self, key_file: str) -> None:
        """Honour URLs signed with the service account key in ``key_file`` (its public half, as Google holds it)."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        info = json.loads(Path(key_file).read_text())
        self.signers[info["client_email"]] = load_pem_private_key(info["private_key"].encode(), None).public_key()

    def admitted(self, how: str | None = None) -> list[tuple[str, str]]:
        """Requests let through (``how``: only those with a "token", or only "signed" ones)."""
        wanted = {how} if how else {"token", "signed"}
        return [(method, path) for method, path, why in self.requests if why in wanted]

    def refused(self) -> list[tuple[str, str, str]]:
        return [entry for entry in self.requests if entry[2] not in ("token", "signed")]

    def admit(self, method: str, target: str, headers: Any) -> str:
        """Why a request may pass ("token", "signed"), or why not."""
        if headers.get("Authorization") == f"Bearer {TOKEN}":
            return "token"
        params = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
        if "X-Goog-Signature" not in params:
            return "no credentials"
        return _v4_signature_error(method, target, headers, self.signers) or "signed"


def _v4_signature_error(method: str, target: str, headers: Any, signers: dict[str, Any]) -> str | None:
    """Why a V4 signed URL (GOOG4-RSA-SHA256) does not hold, as Cloud Storage checks it; None when it does."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    url = urlsplit(target)
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    signature = params.pop("X-Goog-Signature")
    if params.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256":
        return f"unsupported algorithm {params.get('X-Goog-Algorithm')!r}"
    email, _, scope = params.get("X-Goog-Credential", "").partition("/")
    key = signers.get(email)
    if key is None:
        return f"signed by {email!r}, not a key this bucket trusts"
    signed_at = datetime.datetime.strptime(params["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    if now > signed_at + datetime.timedelta(seconds=int(params["X-Goog-Expires"])):
        return "the signed URL has expired"
    names = params["X-Goog-SignedHeaders"].split(";")
    canonical_headers = "".join(f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in names)
    query = "&".join(sorted(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in params.items()))
    canonical = "\n".join([method, url.path, query, canonical_headers, ";".join(names), "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["GOOG4-RSA-SHA256", params["X-Goog-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
    try:
        key.verify(bytes.fromhex(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return "the signature does not match the request"
    return None


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _gate(upstream: str, gated: GatedGcs) -> ThreadingHTTPServer:
    """A reverse proxy to ``upstream`` that answers 401 (no credentials) or 403 (credentials that do not hold), as
    Cloud Storage does, to what ``GatedGcs.admit`` refuses; fake-gcs-server's own address in responses (upload
    session URLs) is rewritten to the gate's."""
    target = urlsplit(upstream)

    class Gate(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if not size:
                        break
                    chunks.append(chunk)
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            why = gated.admit(self.command, self.path, self.headers)
            gated.requests.append((self.command, urlsplit(self.path).path, why))
            if why not in ("token", "signed"):
                message = "Anonymous caller does not have storage access." if why == "no credentials" else why
                status, payload = google_error(401 if why == "no credentials" else 403, "UNAUTHENTICATED", message)
                self._reply(status, [("Content-Type", "application/json")], json.dumps(payload).encode())
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read().replace(target.netloc.encode(), gated.url.removeprefix("http://").encode())
            kept = [(k, v.replace(upstream, gated.url)) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            connection.close()
            self._reply(response.status, kept, data)

        def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, *_args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Gate)


@pytest.fixture
def gcs_with_credentials(fake_gcs: FakeGcs, google_apis: FakeGoogleApis) -> Iterator[GatedGcs]:
    """Cloud Storage as a job on Google Cloud meets it: credentials from the metadata server, or no access."""
    gated = GatedGcs("", fake_gcs)
    server = _gate(fake_gcs.endpoint, gated)
    gated.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield gated
    finally:
        server.shutdown()
        server.server_close()


# -- fakes of the REST APIs -----------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


@dataclass
class FakeGoogleApis:
    server: FakeHttpServer
    custom_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancel_polls: int = 1
    """GETs of a cancelling job before it reads JOB_STATE_CANCELLED (Vertex) / cancelled (Cloud Run)."""
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cancelling: dict[str, int] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(4001))

    @property
    def url(self) -> str:
        return self.server.url

    def install(self) -> None:
        s = self.server
        jobs = r"/v1/(projects/[^/]+/locations/[^/]+)/customJobs"
        s.route("POST", jobs, self._create_custom_job)
        s.route("GET", jobs + r"/(\d+)", self._get_custom_job)
        s.route("POST", jobs + r"/(\d+):cancel", self._cancel_custom_job)
        s.route("DELETE", jobs + r"/(\d+)", self._delete_custom_job)
        s.route("GET", r"/v1/(projects/[^/]+/locations/[^/]+/operations/\d+)", self._get_operation)
        run_jobs = r"/v2/(projects/[^/]+/locations/[^/]+)/jobs/([a-z0-9-]+)"
        s.route("POST", run_jobs + ":run", self._run_job)
        s.route("GET", run_jobs + r"/executions/([a-z0-9-]+)", self._get_execution)
        s.route("POST", run_jobs + r"/executions/([a-z0-9-]+):cancel", self._cancel_execution)
        s.route("GET", run_jobs + r"/executions/([a-z0-9-]+)/tasks", self._list_tasks)
        s.route("POST", r"/v2/entries:list", self._list_entries)
        s.route("GET", r"/v1/(projects/[^/]+/secrets/[^/]+/versions/[^/:]+):access", self._access_secret)
        s.route("GET", r"/computeMetadata/v1/instance/service-accounts/default/token", self._token)
        s.route("GET", r"/computeMetadata/v1/instance/service-accounts/default/", self._account)
        s.route("GET", r"/computeMetadata/v1/project/project-id", self._metadata(PROJECT_ID))
        s.route("GET", r"/computeMetadata/v1/universe/universe-domain", self._metadata("googleapis.com"))
        s.route("GET", r"/", self._metadata("ok"))  # google-auth's "is this GCE?" ping
        s.response_headers["Metadata-Flavor"] = "Google"
        s.authorize = self._authorize

    def _authorize(self, request: Request) -> tuple[int, dict[str, Any]] | None:
        """The metadata server asks for its header; every API wants the token it issued."""
        if request.path == "/" or request.path.startswith("/computeMetadata/"):
            if request.headers.get("Metadata-Flavor") != "Google":
                return 403, {"error": "Missing Metadata-Flavor:Google header."}
            return None
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        return None

    def api_requests(self) -> list[Request]:
        """Requests to the APIs (not to the metadata server)."""
        return [r for r in self.server.requests if r.path != "/" and not r.path.startswith("/computeMetadata/")]

    @staticmethod
    def _metadata(value: Any) -> Handler:
        return lambda _match, _request: (200, value)

    # Vertex AI ------------------------------------------------------------------------------------

    def _create_custom_job(self, match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        body = request.body
        pools = (body.get("jobSpec") or {}).get("workerPoolSpecs") or []
        if not body.get("displayName"):
            return google_error(400, "INVALID_ARGUMENT", "CustomJob.display_name is required.")
        if not pools or not all(p.get("machineSpec", {}).get("machineType") for p in pools):
            return google_error(400, "INVALID_ARGUMENT", "worker_pool_specs[0].machine_spec.machine_type is required.")
        if not all(p.get("containerSpec", {}).get("imageUri") for p in pools):
            return google_error(400, "INVALID_ARGUMENT", "container_spec.image_uri is required.")
        location = match.group(1).split("/")[3]
        name = f"projects/{PROJECT_NUMBER}/locations/{location}/customJobs/{next(self._ids)}"
        job = {**body, "name": name, "state": "JOB_STATE_PENDING", "createTime": _now(), "updateTime": _now()}
        self.custom_jobs[name] = job
        return 200, job

    def _job(self, match: re.Match[str]) -> dict[str, Any] | None:
        name = f"{match.group(1)}/customJobs/{match.group(2)}"
        return self.custom_jobs.get(name)

    def _get_custom_job(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        job = self._job(match)
        if job is None:
            return google_error(404, "NOT_FOUND", f"The CustomJob does not exist: {match.group(0)}")
        if job["name"] in self._cancelling:
            self._cancelling[job["name"]] -= 1
            if self._cancelling[job["name"]] < 0:
                del self._cancelling[job["name"]]
                job.update(state="JOB_STATE_CANCELLED", error={"code": 1, "message": "CANCELED"}, endTime=_now())
        return 200, job

    def _cancel_custom_job(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        job = self._job(match)
        if job is None:
            return google_error(404, "NOT_FOUND", "The CustomJob does not exist.")
        if job["state"] in VERTEX_FINAL:
            return google_error(400, "FAILED_PRECONDITION", f"Cannot cancel a CustomJob in state {job['state']}.")
        job["state"] = "JOB_STATE_CANCELLING"
        self._cancelling[job["name"]] = self.cancel_polls
        return 200, {}

    def _delete_custom_job(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        job = self._job(match)
        if job is None:
            return google_error(404, "NOT_FOUND", "The CustomJob does not exist.")
        if job["state"] not in VERTEX_FINAL:
            return google_error(
                400, "FAILED_PRECONDITION", f"The CustomJob cannot be deleted while in state {job['state']}."
            )
        del self.custom_jobs[job["name"]]
        location = job["name"].split("/")[3]
        name = f"projects/{PROJECT_NUMBER}/locations/{location}/operations/{next(self._ids)}"
        operation = {
            "name": name,
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata",
                "genericMetadata": {"createTime": _now(), "updateTime": _now()},
            },
            "done": False,
        }
        self.operations[name] = operation
        return 200, operation

    def _get_operation(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        operation = self.operations.get(match.group(1))
        if operation is None:
            return google_error(404, "NOT_FOUND", "Operation not found.")
        operation.update(done=True, response={"@type": "type.googleapis.com/google.protobuf.Empty"})
        return 200, operation

    def set_job_state(self, name: str, state: str, error: dict[str, Any] | None = None) -> None:
        self.custom_jobs[name]["state"] = state
        if error:
            self.custom_jobs[name]["error"] = error

    # Cloud Run ------------------------------------------------------------------------------------

    def _run_job(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        parent, job = match.group(1), match.group(2)
        short = f"{job}-{uuid.uuid4().hex[:5]}"
        name = f"{parent}/jobs/{job}/executions/{short}"
        execution = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "job": job,
            "createTime": _now(),
            "launchStage": "GA",
            "parallelism": 1,
            "taskCount": 1,
            "reconciling": True,
            "conditions": [
                {"type": "Completed", "state": "CONDITION_PENDING", "lastTransitionTime": _now()},
                {"type": "ResourcesAvailable", "state": "CONDITION_PENDING", "lastTransitionTime": _now()},
            ],
            "logUri": f"https://console.cloud.google.com/logs/viewer?execution={short}",
        }
        self.executions[name] = execution
        operation = {
            "name": f"{parent}/operations/{uuid.uuid4()}",
            "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", **execution},
            "done": False,
        }
        return 200, operation

    def _execution_name(self, match: re.Match[str]) -> str:
        return f"{match.group(1)}/jobs/{match.group(2)}/executions/{match.group(3)}"

    def _get_execution(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        name = self._execution_name(match)
        execution = self.executions.get(name)
        if execution is None:
            return google_error(404, "NOT_FOUND", f"Resource '{match.group(3)}' of kind 'EXECUTION' was not found.")
        if name in self._cancelling:
            self._cancelling[name] -= 1
            if self._cancelling[name] < 0:
                del self._cancelling[name]
                execution.update(
                    cancelledCount=1,
                    runningCount=0,
                    completionTime=_now(),
                    reconciling=False,
                    conditions=[
                        {
                            "type": "Completed",
                            "state": "CONDITION_FAILED",
                            "executionReason": "CANCELLED",
                            "message": "The execution was cancelled.",
                            "lastTransitionTime": _now(),
                        }
                    ],
                )
        return 200, execution

    def _cancel_execution(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        name = self._execution_name(match)
        execution = self.executions.get(name)
        if execution is None:
            return google_error(404, "NOT_FOUND", "Execution not found.")
        if execution.get("completionTime"):
            return google_error(400, "FAILED_PRECONDITION", "The execution has already completed.")
        self._cancelling[name] = self.cancel_polls
        return 200, {
            "name": f"{match.group(1)}/operations/{uuid.uuid4()}",
            "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution", **execution},
            "done": False,
        }

    def _list_tasks(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        return 200, {"tasks": self.tasks.get(self._execution_name(match), [])}

    # Cloud Logging --------------------------------------------------------------------------------

    def _list_entries(self, _match: re.Match[str], request: Request) -> tuple[int, dict[str, Any]]:
        body = request.body
        clauses = [c.strip() for c in body.get("filter", "").split(" AND ")]
        tests = []
        for clause in clauses:
            parsed = re.fullmatch(r'([\w.]+(?:\."[^"]+")?)\s*(>=|=)\s*"([^"]*)"', clause)
            if not parsed:
                return google_error(400, "INVALID_ARGUMENT", f"Unparseable filter clause: {clause}")
            tests.append(parsed.groups())
        matching = [e for e in self.log_entries if all(_matches(e, *t) for t in tests)]
        matching.sort(key=lambda e: e["timestamp"])
        start = int(body.get("pageToken") or 0)
        size = int(body.get("pageSize") or 50)
        page = matching[start : start + size]
        result: dict[str, Any] = {"entries": page}
        if start + size < len(matching):
            result["nextPageToken"] = str(start + size)
        return 200, result

    def add_log(
        self, text: str, resource: dict[str, Any], labels: dict[str, str] | None = None, timestamp: str | None = None
    ) -> None:
        self.log_entries.append(
            {
                "insertId": uuid.uuid4().hex[:16],
                "timestamp": timestamp or _now(),
                "resource": resource,
                "labels": labels or {},
                "textPayload": text,
                "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
            }
        )

    # Secret Manager and the metadata server --------------------------------------------------------

    def _access_secret(self, match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        value = self.secrets.get(match.group(1))
        if value is None:
            return google_error(404, "NOT_FOUND", f"Secret Version [{match.group(1)}] not found.")
        return 200, {"name": match.group(1), "payload": {"data": base64.b64encode(value.encode()).decode()}}

    def _token(self, _match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        return 200, {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}

    def _account(self, _match: re.Match[str], _request: Request) -> tuple[int, dict[str, Any]]:
        email = f"runner@{PROJECT_ID}.iam.gserviceaccount.com"
        return 200, {"aliases": ["default"], "email": email, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}


def _matches(entry: dict[str, Any], key: str, op: str, value: str) -> bool:
    quoted = re.fullmatch(r'labels\."([^"]+)"', key)
    if quoted:
        actual = entry.get("labels", {}).get(quoted.group(1))
    else:
        actual: Any = entry
        for part in key.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
    if actual is None:
        return False
    return actual >= value if op == ">=" else actual == value


def point_google_auth_at(metadata_host: str, monkeypatch: pytest.MonkeyPatch, config_dir: Path) -> None:
    """Make google-auth's Application Default Credentials those of a GCE metadata server at ``metadata_host``.

    ``GCE_METADATA_HOST`` reaches job subprocesses; google-auth read it once at
    import, so this process's copy is set too. No key file or gcloud login may
    be found first.
    """
    from google.auth.compute_engine import _metadata

    monkeypatch.setenv("GCE_METADATA_HOST", metadata_host)
    monkeypatch.setenv("GCE_METADATA_IP", metadata_host)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", metadata_host)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config_dir))


@pytest.fixture
def google_apis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeGoogleApis]:
    with FakeHttpServer() as server:
        fake = FakeGoogleApis(server)
        fake.install()
        point_google_auth_at(fake.url.removeprefix("http://"), monkeypatch, tmp_path / "gcloud")
        yield fake
