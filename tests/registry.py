"""Real OCI registries on loopback for the remote-target tests: Debian's ``docker-registry`` (distribution 2.8).

    python -m tests.registry up|down|status

Two registries serve on 127.0.0.1 (plain HTTP, which Docker and containerd
allow for loopback): ``open`` (no authentication, deletion enabled, so
``toolkit env prune`` can delete pushed images) and ``locked`` (htpasswd
authentication with a generated password, for the credential paths, and
deletion disabled, as distribution ships: the registry refuses a prune). ``up``
installs the Debian package when it is missing, writes each registry's
configuration and starts it (the package's systemd unit is not used), and
waits for ``/v2/`` to answer; a registry already running is left as it is.
``down`` stops the processes ``up`` recorded (their PIDs, nothing else) and
removes the registries' storage. Needs root for apt (only when installing).

The local cluster's node is this machine, so its containerd reaches the
registries on 127.0.0.1 too, and pulls from them over plain HTTP with no
configuration: containerd's CRI plugin uses HTTP for ``localhost``,
``127.0.0.1`` and ``::1`` registries by default (checked by the remote
environment tests on the cluster's unmodified containerd configuration).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toolkit import settings

BINARY = "/usr/bin/docker-registry"
PACKAGE = "docker-registry"
PORTS = {"open": 15000, "locked": 15001}
USERNAME = "toolkit"
START_SECONDS = 30
STOP_SECONDS = 10


@dataclass(frozen=True)
class Registry:
    """One running registry: where it listens and, for the locked one, its credentials."""

    name: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
        """One registry API request (with the locked registry's credentials); ``(status, headers)``."""
        import base64

        request = urllib.request.Request(self.url(path), method=method, headers=dict(headers or {}))
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    def manifest_status(self, repository: str, reference: str) -> int:
        """HTTP status of ``HEAD /v2/<repository>/manifests/<reference>`` (200 present, 404 gone)."""
        accept = ", ".join((
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
        ))
        return self.request("HEAD", f"/v2/{repository}/manifests/{reference}", {"Accept": accept})[0]

    def delete_manifest(self, repository: str, digest: str) -> int:
        return self.request("DELETE", f"/v2/{repository}/manifests/{digest}")[0]


def root() -> Path:
    return settings.cache_dir() / "registry"


def _state(name: str) -> Path:
    return root() / name


def _pid_file(name: str) -> Path:
    return _state(name) / "pid.json"


def _alive(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return Path(command).name == Path(BINARY).name


def _recorded_pid(name: str) -> int | None:
    try:
        pid = int(json.loads(_pid_file(name).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if _alive(pid) else None


def _ensure_package() -> None:
    if Path(BINARY).exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", PACKAGE]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"installing Debian's {PACKAGE}: {' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


def _password(name: str) -> str | None:
    path = _state(name) / "password"
    return path.read_text().strip() if name == "locked" and path.exists() else None


def _write_config(name: str, port: int) -> Path:
    import yaml

    state = _state(name)
    (state / "data").mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": f"toolkit-test-{name}"}},
        "storage": {"filesystem": {"rootdirectory": str(state / "data")}, "delete": {"enabled": name == "open"}},
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if name == "locked":
        import bcrypt

        password = secrets.token_urlsafe(18)
        password_file = state / "password"
        password_file.write_text(password + "\n")
        os.chmod(password_file, 0o600)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        (state / "htpasswd").write_text(f"{USERNAME}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "toolkit-test", "path": str(state / "htpasswd")}}
    path = state / "config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # the locked one: serving, and asking for credentials
    except OSError:
        return False


def _start(name: str, port: int) -> None:
    config = _write_config(name, port)
    log = _state(name) / "registry.log"
    with log.open("ab") as handle:
        process = subprocess.Popen([BINARY, "serve", str(config)], stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file(name).write_text(json.dumps({"pid": process.pid}) + "\n")
    deadline = time.monotonic() + START_SECONDS
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            _stop(name)
            raise RuntimeError(f"registry {name!r} did not come up on 127.0.0.1:{port}. Its log {log} ends:\n{tail}")
        time.sleep(0.1)


def _stop(name: str) -> None:
    pid = _recorded_pid(name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(_state(name), ignore_errors=True)


def is_up() -> bool:
    return all(_recorded_pid(name) is not None and _answers(port) for name, port in PORTS.items())


def registries() -> dict[str, Registry]:
    return {
        name: Registry(name, port, USERNAME if name == "locked" else None, _password(name))
        for name, port in PORTS.items()
    }


def up() -> dict[str, Registry]:
    """Start whichever registry is not running (installing the package first if needed)."""
    _ensure_package()
    for name, port in PORTS.items():
        if _recorded_pid(name) is None or not _answers(port):
            _stop(name)
            _start(name, port)
    return registries()


def down() -> None:
    for name in PORTS:
        _stop(name)


@contextmanager
def shared() -> Iterator[dict[str, Registry]]:
    """The registries for one test session; the last session that uses them stops those a session started.

    Like the cluster: sessions hold a shared lock while they use the registries; whoever then gets
    the lock exclusively is the last one out and stops registries a test session started (one
    started by hand with ``python -m tests.registry up`` stays up).
    """
    root().mkdir(parents=True, exist_ok=True)
    marker = root() / "started-by-tests"
    with (root() / "sessions.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_up():
            up()
            marker.touch()
        found = registries()
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield found
        finally:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another session still uses them
            else:
                if marker.exists():
                    down()
                    marker.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status"))
    command = parser.parse_args(argv).command
    if command == "up":
        for registry in up().values():
            print(f"{registry.name:8} http://{registry.host}" + (f"  user {registry.username}" if registry.username else ""))
    elif command == "down":
        down()
    else:
        print("registries are " + ("up" if is_up() else "down"))
        return 0 if is_up() else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
