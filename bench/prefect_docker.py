"""Prefect 3's ``@docker`` infrastructure decorator on the local engine, offline, vs ``docker run --rm``.

    python3.11 bench/prefect_docker.py [--repeats 5]      # prints one JSON document

Why: the benchmark issue asks how the toolkit's per-call overhead compares with
the nearest equivalent elsewhere -- Prefect 3 running one call of a flow in a
container of a Docker work pool without a deployment
(``prefect_docker.decorators.docker``: an in-process worker bundles the flow,
starts the container and waits for the result) -- on the same engine. No
registry is reachable here and containers can't reach PyPI, so everything
Prefect would pull or install at run time is prepared on the host, idempotently
under ``bench/.work/prefect/`` (git-ignored):

* a venv of its own, so Prefect's dependencies never touch the toolkit's. Its
  package set is resolved (``uv pip compile``) for the *image's* interpreter:
  markers such as ``python_full_version < '3.11.3'`` differ from the host's.
* ``toolkit-bench-prefect:<prefect version>`` = ``toolkit-base:bookworm`` plus
  exactly the venv's packages (pip and setuptools included) from wheels
  downloaded on the host. Exactly, because the decorator's default execution
  step is ``uv run --with prefect==X --python 3.11 -m prefect.bundles.execute``
  which then runs ``uv pip install <the submitting venv's uv pip freeze>`` in
  the container: with ``UV_OFFLINE=1`` both are no-ops only if every pin is
  already there. uv freezes ``$VIRTUAL_ENV``, not ``sys.executable``'s
  environment, hence VIRTUAL_ENV is set for the measuring process.
* a throw-away ``prefect server`` (SQLite in a per-run PREFECT_HOME, UI and
  analytics off) bound to the docker bridge gateway, so flow containers on the
  default bridge -- like the baseline's -- reach its API.
* result storage: the Docker worker's ad-hoc path configures none, and a
  result only comes back if it was persisted where the caller can read it, so
  the flow persists into a saved ``LocalFileSystem`` block whose directory is
  bind-mounted into the container at the same path.

HTTP(S)_PROXY of the server and the measuring process point at a local sink
that counts connections: ``outbound_attempts`` shows any try to reach the
network instead of it silently succeeding through this machine's proxy. Each
call is timed from the decorated call to its value (worker start, bundle,
container, flow, result read, worker exit), alternating with ``docker run --rm``
of the same image. Everything started is removed at the end: server process
group, containers of the run's work pool, the work pool, the run directory.
If a step fails, the JSON says which step, the error and the output's tail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "prefect"
VENV = WORK / "venv"
BASE_IMAGE = "toolkit-base:bookworm"
PREFECT = "3.9.1"
PREFECT_DOCKER = "0.7.4"
UV = "0.13.9"
IMAGE = f"toolkit-bench-prefect:{PREFECT}"
FREEZE_LABEL = "toolkit.bench.freeze"
RESULT_BLOCK = "bench-results"
TRIVIAL = "print(1 + 1)"
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/prefect \\
 && /opt/prefect/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \\
 && rm -rf /tmp/wheels
ENV PATH=/opt/prefect/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    VIRTUAL_ENV=/opt/prefect UV_OFFLINE=1
"""


class StepFailed(Exception):
    """A preparation or measuring step failed; carries what the JSON report needs."""

    def __init__(self, step: str, error: str, detail: str = "") -> None:
        super().__init__(f"{step}: {error}")
        self.step, self.error, self.detail = step, error, detail


def _log(message: str) -> None:
    print(f"[prefect-bench] {message}", file=sys.stderr, flush=True)


def _run(step: str, command: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepFailed(step, f"{type(exc).__name__}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-3000:]
        raise StepFailed(step, f"`{' '.join(command[:6])} ...` exited {done.returncode}", tail)
    return done.stdout


def _stats(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


# ---------------------------------------------------------------- preparation


def _interpreter(image_python: str) -> str:
    """The host Python must have the image's minor version: Prefect passes `--python 3.X` of
    the submitting process to `uv run` in the container, and the flow is cloudpickled."""
    minor = ".".join(image_python.split(".")[:2])
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return sys.executable
    found = shutil.which(f"python{minor}")
    if found is None:
        raise StepFailed("venv", f"no python{minor} on this host; the image {BASE_IMAGE} has Python {image_python}")
    return found


def ensure_venv(image_python: str) -> None:
    """Prefect + prefect-docker + uv, resolved for the image's interpreter, in their own venv."""
    stamp = VENV / ".bench-stamp"
    wanted = f"prefect=={PREFECT} prefect-docker=={PREFECT_DOCKER} uv=={UV} for python {image_python}"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    _log(f"creating {VENV} ({wanted})")
    shutil.rmtree(VENV, ignore_errors=True)
    _run("venv", [_interpreter(image_python), "-m", "venv", str(VENV)])
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run("venv: install uv", [*pip, f"uv=={UV}"])
    requirements = WORK / "requirements.in"
    requirements.write_text(f"prefect=={PREFECT}\nprefect-docker=={PREFECT_DOCKER}\nuv=={UV}\n")
    lock = WORK / "requirements.lock"
    _run("venv: resolve for the image's python", [
        str(VENV / "bin" / "uv"), "pip", "compile", "-q", "--python-version", image_python,
        str(requirements), "-o", str(lock),
    ], env={**os.environ, "UV_CACHE_DIR": str(WORK / "uv-cache")})
    _run("venv: install prefect", [*pip, "-r", str(lock)])
    stamp.write_text(wanted)


def _venv_env() -> dict[str, str]:
    return {**os.environ, "VIRTUAL_ENV": str(VENV), "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def ensure_image() -> str:
    """Build IMAGE from wheels of exactly the venv's packages, unless an image of that set exists."""
    freeze = _run("image: freeze venv", [str(VENV / "bin" / "uv"), "pip", "freeze"], env=_venv_env())
    digest = hashlib.sha256(freeze.encode()).hexdigest()[:16]
    existing = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{.Id}}}} {{{{index .Config.Labels "{FREEZE_LABEL}"}}}}', IMAGE],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if existing[1:] == [digest]:
        return digest
    _log(f"building {IMAGE} from host wheels ({len(freeze.splitlines())} packages)")
    context = WORK / "image"
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    (context / "frozen.txt").write_text(freeze)
    (context / "Dockerfile").write_text(DOCKERFILE)
    _run("image: download wheels on the host", [
        str(VENV / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
        "-d", str(context / "wheels"), "-r", str(context / "frozen.txt"),
    ])
    _run("image: docker build", [
        "docker", "build", "--force-rm", "-q", "-t", IMAGE, "--label", f"{FREEZE_LABEL}={digest}", str(context),
    ], env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if existing:  # the image of the previous package set, now untagged
        subprocess.run(["docker", "rmi", existing[0]], capture_output=True, check=False)
    return digest


class _Sink(socketserver.ThreadingTCPServer):
    """Stands in for an HTTP proxy; records the first line of every connection and drops it."""

    daemon_threads = True

    def __init__(self) -> None:
        self.attempts: list[str] = []
        super().__init__(("127.0.0.1", 0), _SinkHandler)


class _SinkHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(2)
        try:
            line = self.rfile.readline(300).decode(errors="replace").strip()
        except OSError:
            line = "(no request line)"
        self.server.attempts.append(line)  # type: ignore[attr-defined]


@contextmanager
def outbound_sink() -> Iterator[_Sink]:
    sink = _Sink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


def _bridge_gateway() -> str:
    out = _run("server: bridge gateway", [
        "docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}",
    ])
    return out.strip()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def prefect_env(run_dir: Path, api_url: str, host: str, port: int, sink: _Sink) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{sink.server_address[1]}"
    no_proxy = f"{host},localhost,127.0.0.1"
    return {
        **_venv_env(),
        "PREFECT_HOME": str(run_dir / "home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "TMPDIR": str(run_dir / "tmp"),  # the worker's bundle directories
        "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
        "NO_PROXY": no_proxy, "no_proxy": no_proxy,
    }


@contextmanager
def prefect_server(env: dict[str, str], log: Path) -> Iterator[float]:
    """`prefect server start` in its own process group; yields seconds until /health answered."""
    started = time.perf_counter()
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(VENV / "bin" / "prefect"), "server", "start"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        health = env["PREFECT_API_URL"] + "/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if server.poll() is not None:
                raise StepFailed("server: start", f"prefect server exited {server.returncode}", log.read_text()[-3000:])
            if time.perf_counter() - started > 180:
                raise StepFailed("server: start", f"{health} not answering after 180s", log.read_text()[-3000:])
            try:
                with opener.open(health, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield time.perf_counter() - started
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _remove_pool_containers(pool: str) -> int:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=io.prefect.work-pool-name={pool}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    return len(ids)


def orchestrate(repeats: int) -> dict[str, Any]:
    report: dict[str, Any] = {"prefect": PREFECT, "prefect_docker": PREFECT_DOCKER, "image": IMAGE, "prepare": {}}
    WORK.mkdir(parents=True, exist_ok=True)
    image_python = _run("probe base image", [
        "docker", "run", "--rm", BASE_IMAGE, "python3", "-c", "import platform; print(platform.python_version())",
    ]).strip()
    clock = time.perf_counter()
    ensure_venv(image_python)
    report["prepare"]["venv_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    report["image_packages_digest"] = ensure_image()
    report["prepare"]["image_s"] = time.perf_counter() - clock
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    (run_dir / "tmp").mkdir()
    (run_dir / "results").mkdir()
    pool = f"toolkit-bench-{os.getpid()}"
    try:
        with outbound_sink() as sink:
            host = _bridge_gateway()
            port = _free_port(host)
            env = prefect_env(run_dir, f"http://{host}:{port}/api", host, port, sink)
            _log(f"starting prefect server on {host}:{port}")
            with prefect_server(env, run_dir / "server.log") as ready_s:
                report["prepare"]["server_start_s"] = ready_s
                out = run_dir / "measure.json"
                _log(f"measuring {repeats} calls (+1 warm-up) through @docker(work_pool={pool!r})")
                _run("measure", [
                    str(VENV / "bin" / "python"), __file__, "--measure", str(out), "--repeats", str(repeats),
                    "--pool", pool, "--results-dir", str(run_dir / "results"),
                ], env=env, timeout=300 + 120 * repeats)
                report.update(json.loads(out.read_text()))
            report["outbound_attempts"] = sink.attempts
    finally:
        report["leftover_containers_removed"] = _remove_pool_containers(pool)
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


# ---------------------------------------------------------------- measuring (inside the venv)


def measure(repeats: int, pool: str, results_dir: str) -> dict[str, Any]:
    """Runs under the venv's Python with the server's environment (see orchestrate)."""
    import asyncio
    import warnings

    # This file's own name would shadow the prefect_docker package.
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
    from prefect import flow, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.filesystems import LocalFileSystem
    from prefect_docker.decorators import docker
    from prefect_docker.worker import DockerWorker

    warnings.filterwarnings("ignore", message="Ad-hoc flow submission via workers is experimental")

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(
                name=pool, type="docker", base_job_template=DockerWorker.get_default_base_job_template(),
            ))

    async def delete_pool() -> None:
        async with get_client() as client:
            await client.delete_work_pool(pool)

    asyncio.run(create_pool())
    block_id = LocalFileSystem(basepath=results_dir).save(RESULT_BLOCK)

    @docker(work_pool=pool, image=IMAGE, image_pull_policy="Never", auto_remove=True,
            volumes=[f"{results_dir}:{results_dir}"])
    @flow(persist_result=True, result_storage=f"local-file-system/{RESULT_BLOCK}")
    def trivial() -> int:
        print(1 + 1)
        return 2

    def call() -> tuple[float, dict[str, Any]]:
        called = time.time()
        started = time.perf_counter()
        state = trivial(return_state=True)
        value = state.result()
        latency = time.perf_counter() - started
        returned = time.time()
        if value != 2:
            raise RuntimeError(f"flow returned {value!r}, state {state!r}")
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(state.state_details.flow_run_id)
        start, end = run.start_time.timestamp(), run.end_time.timestamp()
        return latency, {
            "latency_s": latency,
            "call_to_flow_running_s": start - called,
            "flow_body_s": end - start,
            "flow_end_to_value_s": returned - end,
            "state": run.state_name,
        }

    baseline_command = ["docker", "run", "--rm", IMAGE, "python3", "-c", TRIVIAL]
    try:
        _, warm_up = call()  # first call: docker client, server's first writes
        latency, baseline, runs = [], [], []
        for _ in range(repeats):
            clock = time.perf_counter()
            subprocess.run(baseline_command, check=True, capture_output=True)
            baseline.append(time.perf_counter() - clock)
            seconds, note = call()
            latency.append(seconds)
            runs.append({**note, "baseline_s": baseline[-1]})
    finally:
        asyncio.run(delete_pool())
        with get_client(sync_client=True) as client:
            client.delete_block_document(block_id)
    return {
        "ok": True,
        "method": "@docker(work_pool=..., image, image_pull_policy=Never, auto_remove=True) @flow(persist_result=True) "
                  "called synchronously, submit->value; baseline `docker run --rm` of the same image, alternating",
        "repeats": repeats,
        "prefect_latency": _stats(latency),
        "baseline": _stats(baseline),
        "ratio": statistics.median(latency) / statistics.median(baseline),
        "warm_up": warm_up,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: JSON output path
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(args.repeats, args.pool, args.results_dir)))
        return
    started = time.perf_counter()
    try:
        report = orchestrate(args.repeats)
    except StepFailed as failed:
        report = {"ok": False, "step": failed.step, "error": failed.error, "detail": failed.detail}
    report["total_s"] = time.perf_counter() - started
    print(json.dumps(report, indent=2))
    if not report["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
