"""The local Docker engine: install Debian's ``docker.io`` if missing, start ``dockerd`` if stopped.

No registry is reachable, so nothing is pulled; the engine only runs images
the toolkit builds itself (see ``runner_image.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from toolkit.errors import ToolchainError
from toolkit.toolchain.steps import Log, run

INSTALL_HINT = "apt-get install -y docker.io  (as root)"
START_HINT = "dockerd > /var/log/dockerd.log 2>&1 &  (as root), or: systemctl start docker"


def engine_version() -> str | None:
    """The server version if a Docker engine answers, else None."""
    if shutil.which("docker") is None:
        return None
    result = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True, timeout=20
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def ensure_installed(log: Log) -> str:
    if shutil.which("dockerd"):
        return "present"
    if os.geteuid() != 0:
        raise ToolchainError(f"the Docker engine is not installed and installing it needs root: {INSTALL_HINT}")
    log("installing Debian's docker.io")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    run(["apt-get", "install", "-y", "-qq", "docker.io"], "apt-get install docker.io", env=env)
    return "installed docker.io"


def ensure_running(log: Log, log_file: Path, wait_seconds: float = 60.0) -> str:
    """Start ``dockerd`` in the background if no engine answers; wait until it does."""
    version = engine_version()
    if version:
        return f"running (server {version})"
    if os.geteuid() != 0:
        raise ToolchainError(f"the Docker engine is not running and starting it needs root: {START_HINT}")
    log(f"starting dockerd (log: {log_file})")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as handle:
        subprocess.Popen(
            ["dockerd"], stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        version = engine_version()
        if version:
            return f"started (server {version})"
        time.sleep(0.5)
    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    raise ToolchainError(f"dockerd did not answer within {wait_seconds:.0f}s; its log ends:\n{tail}")
