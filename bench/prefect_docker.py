"""Prefect 3's ``@docker`` infrastructure decorator on the local engine, offline, vs ``docker run --rm``.

    .venv/bin/python bench/prefect_docker.py [--repeats 5]   # saves section ``prefect`` (bench/report.py)
    .venv/bin/python bench/prefect_docker.py --json          # prints one JSON document (bench/run.py)

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
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the shared Prefect harness lives in tests/prefect
WORK = HERE / ".work" / "prefect"
VENV = WORK / "venv"
BASE_IMAGE = "toolkit-base:bookworm"
PREFECT_DOCKER = "0.7.4"
RESULT_BLOCK = "bench-results"
TRIVIAL = "print(1 + 1)"
DOCKERFILE = """\
FROM {base}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/prefect \\
 && /opt/prefect/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \\
 && rm -rf /tmp/wheels
ENV PATH=/opt/prefect/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    VIRTUAL_ENV=/opt/prefect UV_OFFLINE=1
"""


def _log(message: str) -> None:
    print(f"[prefect-bench] {message}", file=sys.stderr, flush=True)


def _stats(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def _remove_pool_containers(pool: str) -> int:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=io.prefect.work-pool-name={pool}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    return len(ids)


def orchestrate(repeats: int) -> dict[str, Any]:
    from tests.prefect import harness

    image = f"toolkit-bench-prefect:{harness.PREFECT}"
    requirements = [f"prefect=={harness.PREFECT}", f"prefect-docker=={PREFECT_DOCKER}", f"uv=={harness.UV}"]
    report: dict[str, Any] = {
        "prefect": harness.PREFECT, "prefect_docker": PREFECT_DOCKER, "image": image, "prepare": {},
    }
    WORK.mkdir(parents=True, exist_ok=True)
    python_version = harness.image_python(BASE_IMAGE)
    clock = time.perf_counter()
    harness.ensure_venv(VENV, requirements, python_version, log=_log)
    report["prepare"]["venv_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    # Exactly what the worker will freeze, pip and setuptools (the venv's seed packages) included.
    frozen = harness.run("freeze", [str(VENV / "bin" / "uv"), "pip", "freeze", "--python", str(VENV / "bin" / "python")])
    report["image_packages_digest"] = harness.ensure_image_with(
        VENV, frozen.split(), BASE_IMAGE, image, DOCKERFILE, WORK, label="toolkit.bench.freeze"
    )
    report["prepare"]["image_s"] = time.perf_counter() - clock
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    (run_dir / "tmp").mkdir()
    (run_dir / "results").mkdir()
    pool = f"toolkit-bench-{os.getpid()}"
    try:
        with harness.outbound_sink() as sink:
            host = harness.bridge_gateway()
            port = harness.free_port(host)
            env = {**harness.server_env(VENV, run_dir / "home", host, port, sink), "TMPDIR": str(run_dir / "tmp")}
            _log(f"starting prefect server on {host}:{port}")
            with harness.prefect_server(VENV, env, run_dir / "server.log", timeout=180) as ready_s:
                report["prepare"]["server_start_s"] = ready_s
                out = run_dir / "measure.json"
                _log(f"measuring {repeats} calls (+1 warm-up) through @docker(work_pool={pool!r})")
                harness.run("measure", [
                    str(VENV / "bin" / "python"), __file__, "--measure", str(out), "--repeats", str(repeats),
                    "--pool", pool, "--results-dir", str(run_dir / "results"), "--image", image,
                ], env=env, timeout=300 + 120 * repeats)
                report.update(json.loads(out.read_text()))
            report["outbound_attempts"] = sink.attempts
    finally:
        report["leftover_containers_removed"] = _remove_pool_containers(pool)
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


# ---------------------------------------------------------------- measuring (inside the venv)


def measure(repeats: int, pool: str, results_dir: str, image: str) -> dict[str, Any]:
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

    @docker(work_pool=pool, image=image, image_pull_policy="Never", auto_remove=True,
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

    baseline_command = ["docker", "run", "--rm", image, "python3", "-c", TRIVIAL]
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
    parser.add_argument("--json", action="store_true", help="Print the JSON document; save nothing.")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: JSON output path
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(args.repeats, args.pool, args.results_dir, args.image)))
        return
    if args.json:
        report = compare(args.repeats)
        print(json.dumps(report, indent=2))
        sys.exit(0 if report["ok"] else 1)
    from report import Run  # bench/report.py, next to this script

    saved = Run.begin().section("prefect", compare, args.repeats)
    print(json.dumps(saved, indent=2))


def compare(repeats: int) -> dict[str, Any]:
    """The whole comparison; a failed step is reported (which step, its error), not raised."""
    started = time.perf_counter()
    try:
        report = orchestrate(repeats)
    except Exception as failed:  # noqa: BLE001 - the report says which step failed
        from tests.prefect.harness import StepFailed

        if not isinstance(failed, StepFailed):
            raise
        report = {"ok": False, "step": failed.step, "error": failed.error, "detail": failed.detail}
    report["total_s"] = time.perf_counter() - started
    return report


if __name__ == "__main__":
    main()
