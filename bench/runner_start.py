"""The runner's own start in the image the kubernetes pods run: from the process's exec to the call
of the function, on the signed path (``toolkit.storage_urls``) and on the fsspec path (s3fs), and
the fsspec path of another checkout's runner (``--before``, e.g. the commit before the signed path)
in the same container, as the baseline.

    .venv/bin/python bench/runner_start.py [--repeats 15] [--before /path/to/checkout]

The S3 store is moto, in this process, on loopback; the runner runs in a container of the pods'
image (``toolkit-runner:<v>-s3``, the host's network) started once: a driver inside it spawns the
runner again and again, the paths alternating, and each call of the function reports the
time and the CPU its process had used. The runner is this checkout's job modules (and
``--before``'s: its signed path too, when it has one), mounted over the image's interpreter,
cloudpickle, fsspec and s3fs, whichever checkout built the image. Also ``python -X importtime -c 'import toolkit.runner'``
there (the import's own cumulative time, median). Prints one JSON document; ``--update``
saves it as section ``runner_start`` of bench/results.md instead (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

KEY = "b" * 64
BUCKET = "runner-start"


def report_start() -> None:
    """The function each runner calls: prints when it was called and the CPU its process had used."""
    import json
    import time

    print("TOOLKIT-START " + json.dumps({"called": time.time(), "cpu": time.process_time()}), flush=True)


DRIVER = r"""
import json, os, subprocess, sys, time
signed_env, direct_env, storage, repeats = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
here = {"PYTHONPATH": "/checkout"} if os.path.isdir("/checkout/toolkit") else {}
paths = [("signed", {**signed_env, **here}), ("fsspec", {**direct_env, **here})]
if os.path.isfile("/before/toolkit/storage_urls.py"):
    paths.append(("signed, before", {**signed_env, "PYTHONPATH": "/before"}))
if os.path.isdir("/before/toolkit"):
    paths.append(("fsspec, before", {**direct_env, "PYTHONPATH": "/before"}))
runs = {path: [] for path, _ in paths}
for _ in range(repeats):
    for path, extra in paths:
        began = time.time()
        done = subprocess.run([sys.executable, "-m", "toolkit.runner", "--storage", storage],
                              env={**os.environ, **extra}, capture_output=True, text=True)
        ended = time.time()
        if done.returncode:
            raise SystemExit(done.stdout + done.stderr)
        line = next(l for l in done.stdout.splitlines() if l.startswith("TOOLKIT-START "))
        report = json.loads(line.split(" ", 1)[1])
        runs[path].append({"to_call": report["called"] - began, "cpu": report["cpu"], "whole": ended - began})
imports = {path: [] for path, _ in paths if not path.startswith("signed")}
for _ in range(repeats):
    for path in imports:
        env = {**os.environ, **({"PYTHONPATH": "/before"} if path.endswith("before") else here)}
        trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import toolkit.runner"],
                               capture_output=True, text=True, env=env).stderr.splitlines()
        imports[path].append(int(next(l for l in trace if l.rstrip().endswith("| toolkit.runner")).split("|")[1]) / 1e6)
bare = []
for _ in range(repeats):
    began = time.time()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare.append(time.time() - began)
print(json.dumps({"runs": runs, "imports": imports, "bare_interpreter": bare}))
"""


def _moto(endpoint: str, action: str) -> bytes:
    import urllib.request

    method = "GET" if action == "download-recording" else "POST"
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method=method, data=None if method == "GET" else b"")
    with urllib.request.urlopen(request) as response:
        return response.read()


def storage_requests(endpoint: str, url: str, env: dict[str, str]) -> list[str]:
    """The requests one single call's runner makes to the S3 store (moto's recorder), run on this machine."""
    _moto(endpoint, "reset-recording")
    _moto(endpoint, "start-recording")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "PYTHONPATH"))}
    subprocess.run([sys.executable, "-m", "toolkit.runner", "--storage", url], env={**base, **env}, check=True)
    _moto(endpoint, "stop-recording")
    made = []
    for line in _moto(endpoint, "download-recording").decode().splitlines():
        if line.strip():
            record = json.loads(line)
            made.append(f"{record['method']} {record['url'].split('?')[0].rsplit('/', 1)[-1] or '/'}")
    return made


def measure(image: str, repeats: int, before: Path | None = None) -> dict:
    """Both paths, ``repeats`` times each, alternating, in one container of ``image``; medians."""
    os.environ["MOTO_RECORDER_FILEPATH"] = os.path.join(tempfile.mkdtemp(prefix="moto-recording-"), "requests")
    import fsspec
    from moto.server import ThreadedMotoServer

    from tests.emulators.aws import _free_port
    from toolkit.bundles import BUNDLE_NAME, RUN_KEY_ENV, STORAGE_OPTIONS_ENV, dump_call, seal
    from toolkit.presign import sign_run

    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        options = {"endpoint_url": "http://{}:{}".format(*server.get_host_and_port())}
        url = f"s3://{BUCKET}/run"
        fs = fsspec.filesystem("s3", **options, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        fs.pipe_file(f"{BUCKET}/run/{BUNDLE_NAME}", seal("bundle", dump_call(report_start, (), {}), KEY))
        signed = sign_run(url, options, KEY)
        assert signed is not None
        signed_env = {"TOOLKIT_STORAGE_URLS": signed.env, RUN_KEY_ENV: KEY}
        direct_env = {**credentials, STORAGE_OPTIONS_ENV: json.dumps(options), RUN_KEY_ENV: KEY}
        here = {"PYTHONPATH": str(HERE.parent)}
        requests = {
            "signed": storage_requests(options["endpoint_url"], url, {**signed_env, **here}),
            "fsspec": storage_requests(options["endpoint_url"], url, {**direct_env, **here}),
        }
        if before:
            if (before / "toolkit" / "storage_urls.py").exists():
                requests["signed, before"] = storage_requests(
                    options["endpoint_url"], url, {**signed_env, "PYTHONPATH": str(before)}
                )
            requests["fsspec, before"] = storage_requests(options["endpoint_url"], url, {**direct_env, "PYTHONPATH": str(before)})
        mount = []
        for checkout, at in ((HERE.parent, "/checkout"), *(((before, "/before"),) if before else ())):
            _compiled(checkout / "toolkit")
            mount += ["-v", f"{checkout}/toolkit:{at}/toolkit:ro"]
        output = subprocess.run(
            ["docker", "run", "--rm", "--network", "host", *mount, "--entrypoint", "python3", image, "-c", DRIVER,
             json.dumps(signed_env), json.dumps(direct_env), url, str(repeats)],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        server.stop()
    measured = json.loads(output.strip().splitlines()[-1])
    median = statistics.median
    return {
        "image": image,
        "checkout": _commit(HERE.parent),
        **({"before": _commit(before)} if before else {}),
        "repeats": repeats,
        "load_average": os.getloadavg(),
        "paths": {
            path: {key: median(run[key] for run in runs) for key in ("to_call", "cpu", "whole")}
            for path, runs in measured["runs"].items()
        },
        "import_seconds": {path: median(values) for path, values in measured["imports"].items()},
        "storage_requests": requests,
        "bare_interpreter_seconds": median(measured["bare_interpreter"]),
    }


def _compiled(package: Path) -> None:
    """The package's bytecode, up to date, as a wheel install has it: the container mounts it read-only
    (and does not write bytecode), so stale ``.pyc`` files would be compiled again at every start."""
    import compileall

    compileall.compile_dir(str(package), maxlevels=0, quiet=1)


def _commit(checkout: Path) -> str:
    """The checkout's commit (short), with ``+`` when its working tree differs; not a git checkout (an export,
    ``git archive REV toolkit``, in a directory named after REV): its directory's name."""
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return checkout.name
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--", "toolkit"], capture_output=True, text=True)
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


GOAL_MS = 150.0


def render(saved: dict, sections: dict[str, dict] | None = None) -> list[str]:
    """Section ``runner_start`` of results.md (bench/report.py), from the saved run alone."""
    data = saved["data"]
    paths, imports, requests = data["paths"], data["import_seconds"], data["storage_requests"]
    signed, before = paths["signed"], paths.get("fsspec, before", paths["fsspec"])
    load = data["load_average"]
    met = "met" if signed["to_call"] * 1000 <= GOAL_MS else "**missed**"
    lines = [
        "## The runner's own start in the pods' image (`bench/runner_start.py`)",
        "",
        f"`{saved['command']}`, started {saved['started']}, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1, 5, 15 min) on {saved['host']['cores']} "
        f"cores shared with other work; medians of {data['repeats']} runs of each path, alternating, in one "
        f"container of `{data['image']}` against moto's S3 on loopback.",
        "",
        "| runner | exec → the function's call | CPU before the call | whole run (to exit) | `import toolkit.runner` "
        "| a single call's storage requests |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "signed": "this checkout, signed requests (`toolkit.storage_urls`)",
        "fsspec": "this checkout, fsspec (s3fs)",
        "fsspec, before": "before the signed path (373a629), fsspec (s3fs): the baseline",
    }
    if "checkout" in data:  # each checkout's runner mounted into the image (runs before that: the image's own)
        labels = {
            "signed": f"this checkout ({data['checkout']}), signed requests (`toolkit.storage_urls`)",
            "fsspec": f"this checkout ({data['checkout']}), fsspec (s3fs)",
            "signed, before": f"{data.get('before')}, signed requests",
            "fsspec, before": f"{data.get('before')}, fsspec (s3fs): the baseline",
        }
    for path, label in labels.items():
        if path not in paths:
            continue
        run = paths[path]
        imported = imports.get(path.replace("signed", "fsspec"), imports.get("fsspec"))
        lines.append(
            f"| {label} | {run['to_call'] * 1000:.0f} ms | {run['cpu'] * 1000:.0f} ms | {run['whole'] * 1000:.0f} ms "
            f"| {imported * 1000:.0f} ms | {', '.join(requests[path])} |"
        )
    lines += [
        "",
        f"Goal (issue 28): the runner's own start ≤ {GOAL_MS:.0f} ms: {signed['to_call'] * 1000:.0f} ms on the signed "
        f"path, {met}; the baseline in the same run {before['to_call'] * 1000:.0f} ms "
        f"({before['to_call'] / signed['to_call']:.1f}× the signed path). A bare `python -c pass` in the same "
        f"container: {data['bare_interpreter_seconds'] * 1000:.0f} ms. CPU before the call is the runner process's "
        "own (user + system, `time.process_time()` in the function); the wall times also hold its waits for a core "
        "on the machine as loaded as above. `import toolkit.runner` is the import's own cumulative time from "
        "`python -X importtime`; the requests are moto's record of one single call's runner.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--image", default=None, help="default: this checkout's s3 runner image")
    parser.add_argument("--before", type=Path, help="a checkout whose runner's fsspec path is the baseline")
    parser.add_argument("--update", action="store_true", help="save section runner_start and render results.md")
    args = parser.parse_args()
    from report import Run  # bench/report.py, next to this script

    from toolkit import settings

    image = args.image or settings.runner_image("s3")
    if not args.update:
        print(json.dumps(measure(image, args.repeats, args.before), indent=2))
        return
    saved = Run.begin().section("runner_start", measure, image, args.repeats, args.before)
    print("\n".join(render(saved)))


if __name__ == "__main__":
    main()
