"""Real Prefect on this machine, offline: a venv with Prefect, a local ``prefect server``, an image with Prefect.

Shared by the Prefect tests, ``bench/prefect_docker.py`` and scripts/test
(``python -m tests.prefect.harness venv`` builds the tests' venv before pytest
starts). Prefect lives in venvs of its own (resolved with ``uv pip compile``
for the interpreter that will run it: markers such as ``python_full_version <
'3.11.3'`` differ between this host's Python and an image's), so its
dependencies never touch the toolkit's venv. Everything is idempotent and
cached by a stamp of what was asked for.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PREFECT = "3.9.1"
UV = "0.13.9"
ROOT = Path(__file__).resolve().parents[2]
TEST_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "toolkit" / "tests" / "prefect-venv"
"""The tests' Prefect venv: Prefect and the toolkit's own pins, for this host's Python."""


class StepFailed(Exception):
    """A preparation step failed; carries the step, the error and the output's tail."""

    def __init__(self, step: str, error: str, detail: str = "") -> None:
        super().__init__(f"{step}: {error}\n{detail}")
        self.step, self.error, self.detail = step, error, detail


def run(step: str, command: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepFailed(step, f"{type(exc).__name__}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-3000:]
        raise StepFailed(step, f"`{' '.join(command[:6])} ...` exited {done.returncode}", tail)
    return done.stdout


def interpreter(python_version: str) -> str:
    """A host interpreter of ``python_version``'s minor version (bundles are cloudpickled across)."""
    minor = ".".join(python_version.split(".")[:2])
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return sys.executable
    found = shutil.which(f"python{minor}")
    if found is None:
        raise StepFailed("venv", f"no python{minor} on this host")
    return found


def compile_lock(venv: Path, requirements: list[str], python_version: str, lock: Path) -> None:
    """Pin ``requirements`` for ``python_version`` into ``lock`` with the venv's uv."""
    source = lock.with_suffix(".in")
    source.write_text("\n".join(requirements) + "\n")
    run(f"resolve for python {python_version}", [
        str(venv / "bin" / "uv"), "pip", "compile", "-q", "--python-version", python_version, str(source), "-o", str(lock),
    ], env={**os.environ, "UV_CACHE_DIR": str(venv.parent / "uv-cache")})


def ensure_venv(venv: Path, requirements: list[str], python_version: str, log: Callable[[str], None] = print) -> Path:
    """A venv at ``venv`` with exactly ``requirements`` (+ uv) resolved for ``python_version``; its python.

    Built once per machine: a stamp of what was asked for makes later calls a
    file read, and a lock beside the venv makes concurrent sessions (CI, a
    benchmark) wait for one build instead of each building. A changed set is
    synced into the existing venv by uv (only the difference is installed,
    from uv's cache next to the venv), so a new pin costs seconds, not a rebuild.
    """
    stamp = venv / ".stamp"
    wanted = hashlib.sha256(f"{sorted(requirements)} {UV} {python_version}".encode()).hexdigest()
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == wanted and python.exists():
            return python
        uv = venv / "bin" / "uv"
        minor = ".".join(python_version.split(".")[:2])
        if not (uv.exists() and python.exists() and _python_minor(python) == minor):
            log(f"creating {venv} (python {python_version}); a few minutes once")
            shutil.rmtree(venv, ignore_errors=True)
            run("venv", [interpreter(python_version), "-m", "venv", str(venv)])
            run("venv: install uv", [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                     f"uv=={UV}"])
        log(f"syncing {venv} with {len(requirements)} requirements")
        stamp.unlink(missing_ok=True)
        lock = venv / "requirements.lock"
        compile_lock(venv, [*requirements, f"uv=={UV}"], python_version, lock)
        run("venv: sync", [str(uv), "pip", "sync", "-q", "--python", str(python), str(lock)],
            env={**os.environ, "UV_CACHE_DIR": str(venv.parent / "uv-cache")})
        stamp.write_text(wanted)
    return python


def _python_minor(python: Path) -> str:
    return run("venv: python version", [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()


def toolkit_requirements() -> list[str]:
    """The toolkit's pinned core and kubernetes dependencies, so client scripts run the same versions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["kubernetes"]]


def ensure_test_venv(log: Callable[[str], None] = print) -> Path:
    """The tests' Prefect venv (``TEST_VENV``), built or synced if what it should hold changed."""
    python_version = ".".join(map(str, sys.version_info[:3]))
    ensure_venv(TEST_VENV, [f"prefect=={PREFECT}", *toolkit_requirements()], python_version, log)
    return TEST_VENV


def venv_env(venv: Path) -> dict[str, str]:
    """The environment of a process in ``venv`` (uv freezes ``$VIRTUAL_ENV``, not ``sys.executable``'s)."""
    return {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


# ---------------------------------------------------------------- a local Prefect server


class OutboundSink(socketserver.ThreadingTCPServer):
    """Stands in for an HTTP proxy; records the first line of every connection and drops it."""

    daemon_threads = True

    def __init__(self) -> None:
        self.attempts: list[str] = []
        super().__init__(("127.0.0.1", 0), _SinkHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _SinkHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(2)
        try:
            line = self.rfile.readline(300).decode(errors="replace").strip()
        except OSError:
            line = "(no request line)"
        self.server.attempts.append(line)  # type: ignore[attr-defined]


@contextmanager
def outbound_sink() -> Iterator[OutboundSink]:
    sink = OutboundSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()


def bridge_gateway() -> str:
    """The docker bridge's gateway: an address of this host that containers on the default bridge reach."""
    inspected = json.loads(run("docker bridge", ["docker", "network", "inspect", "bridge"]))
    return gateway_of(inspected[0], interface_ipv4)


def gateway_of(network: dict, interface_address: Callable[[str], str | None]) -> str:
    """The host's address on a bridge network, from ``docker network inspect``'s document of it.

    A Docker 20.10 daemon that was never restarted reports the default bridge's
    IPAM config with a ``Subnet`` only and no ``Gateway`` (a restart fills it in),
    so the bridge interface (``docker0``) is asked next, and the subnet's first
    host, where Docker puts the bridge's address by default, comes last.
    """
    configs = (network.get("IPAM") or {}).get("Config") or []
    for config in configs:
        if config.get("Gateway"):
            return config["Gateway"].split("/")[0]
    interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    address = interface_address(interface)
    if address:
        return address
    for config in configs:
        subnet = ipaddress.ip_network(config.get("Subnet", ""), strict=False) if config.get("Subnet") else None
        if subnet is not None and subnet.version == 4:
            return str(next(subnet.hosts()))
    raise StepFailed("docker bridge", f"no address for bridge {network.get('Name')!r}: no Gateway, interface "
                     f"{interface!r} has no IPv4 address and no IPv4 Subnet", json.dumps(configs))


def interface_ipv4(name: str) -> str | None:
    """The IPv4 address of the network interface ``name`` (SIOCGIFADDR), or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(answer[20:24])


def package_index_hosts() -> list[str]:
    """Hosts pip downloads from (its index settings, else PyPI's): a client's environments resolve there."""
    urls = [os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple", *os.environ.get("PIP_EXTRA_INDEX_URL", "").split()]
    hosts = {urllib.parse.urlsplit(url).hostname for url in urls} - {None}
    if "pypi.org" in hosts:
        hosts.add("files.pythonhosted.org")
    return sorted(hosts)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def server_env(
    venv: Path, home: Path, host: str, port: int, sink: OutboundSink, auth_string: str | None = None
) -> dict[str, str]:
    """Settings of a throw-away server (SQLite in ``home``, UI and analytics off) and of its clients.

    HTTP(S)_PROXY point at ``sink``, so any try to reach the network is
    recorded instead of silently succeeding through this machine's proxy.
    ``auth_string`` (``user:password``) makes the server require it, and
    its clients send it, as a team's self-hosted server would.
    """
    no_proxy = f"{host},localhost,127.0.0.1"
    auth = {"PREFECT_SERVER_API_AUTH_STRING": auth_string, "PREFECT_API_AUTH_STRING": auth_string} if auth_string else {}
    return {
        **auth,
        **venv_env(venv),
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://{host}:{port}/api",
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "HTTP_PROXY": sink.url, "HTTPS_PROXY": sink.url, "http_proxy": sink.url, "https_proxy": sink.url,
        "NO_PROXY": no_proxy, "no_proxy": no_proxy,
    }


@contextmanager
def prefect_server(venv: Path, env: dict[str, str], log: Path, timeout: float = 300) -> Iterator[float]:
    """``prefect server start`` in its own process group; yields the seconds until /health answered."""
    started = time.perf_counter()
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(venv / "bin" / "prefect"), "server", "start"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        health = env["PREFECT_API_URL"] + "/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if server.poll() is not None:
                raise StepFailed("server: start", f"prefect server exited {server.returncode}", log.read_text()[-3000:])
            if time.perf_counter() - started > timeout:
                raise StepFailed("server: start", f"{health} not answering after {timeout}s", log.read_text()[-3000:])
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


# ---------------------------------------------------------------- an image with Prefect


def image_python(image: str) -> str:
    return run(f"probe {image}", [
        "docker", "run", "--rm", "--entrypoint", "python3", image, "-c",
        "import platform; print(platform.python_version())",
    ]).strip()


def ensure_image_with(
    venv: Path, requirements: list[str], base: str, image: str, dockerfile: str, work: Path, label: str
) -> str:
    """``image`` = ``base`` + wheels of ``requirements`` resolved for the base's Python (downloaded here).

    ``dockerfile`` is formatted with ``base``; it gets a context with ``wheels/``.
    Rebuilt only when the resolved set or the base changed (recorded in a label).
    """
    python_version = image_python(base)
    work.mkdir(parents=True, exist_ok=True)
    lock = work / "image.lock"
    compile_lock(venv, requirements, python_version, lock)
    base_id = run("inspect base", ["docker", "image", "inspect", "--format", "{{.Id}}", base]).strip()
    digest = hashlib.sha256((lock.read_text() + base_id + dockerfile).encode()).hexdigest()[:16]
    existing = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{.Id}}}} {{{{index .Config.Labels "{label}"}}}}', image],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if existing[1:] == [digest]:
        return digest
    context = work / "image"
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    run("download wheels on the host", [
        str(venv / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
        "--python-version", python_version, "-d", str(context / "wheels"), "-r", str(lock),
    ])
    (context / "Dockerfile").write_text(dockerfile.format(base=base))
    run("docker build", [
        "docker", "build", "--force-rm", "-q", "-t", image, "--label", f"{label}={digest}", str(context),
    ], env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if existing:  # the previous build, now untagged
        subprocess.run(["docker", "rmi", existing[0]], capture_output=True, check=False)
    shutil.rmtree(context, ignore_errors=True)
    return digest


if __name__ == "__main__":  # scripts/test: python -m tests.prefect.harness venv | gateway
    if sys.argv[1:] == ["gateway"]:  # the address the Prefect server binds to, from the daemon as it is now
        print(bridge_gateway())
        sys.exit(0)
    if sys.argv[1:] != ["venv"]:
        sys.exit("usage: python -m tests.prefect.harness venv | gateway")
    started = time.perf_counter()
    print(f"{ensure_test_venv(lambda line: print(line, file=sys.stderr, flush=True))} "
          f"({time.perf_counter() - started:.1f}s)", file=sys.stderr)
