"""Images in the cluster's containerd, which no registry can fill: built here and imported.

``pause`` (every pod's sandbox) is one static binary; its image is written as
a Docker image archive by hand (one layer, an entrypoint) rather than built by
an engine. The runner image is the toolkit's own (``toolkit-runner:<v>-s3``,
with s3fs for the pods' storage), built by the Docker engine and moved over
with ``docker save`` | ``ctr import`` (as is any other image a test builds FROM it, e.g. one
with Prefect: ``import_docker_image``). An import is skipped when containerd
already holds the same image, recorded by the source's content digest.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from toolkit.errors import ToolchainError
from toolkit.toolchain import runner_image
from toolkit.toolchain.steps import Log

PAUSE_IMAGE = "toolkit.local/pause:1"
NAMESPACE = "k8s.io"
"""containerd namespace of the CRI plugin: images the kubelet can see."""


def _ctr(socket: Path, *args: str, stdin: bytes | IO[bytes] | None = None) -> str:
    feed = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    result = subprocess.run(["ctr", "--address", str(socket), "-n", NAMESPACE, *args], capture_output=True, **feed)
    if result.returncode != 0:
        raise ToolchainError(f"ctr {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode()


def _present(socket: Path, name: str, digest: str, marks: Path) -> bool:
    """containerd holds ``name`` and it was imported from the source with ``digest``."""
    recorded = json.loads(marks.read_text()) if marks.is_file() else {}
    return recorded.get(name) == digest and name in _ctr(socket, "images", "ls", "-q").split()


def _record(marks: Path, name: str, digest: str) -> None:
    recorded = json.loads(marks.read_text()) if marks.is_file() else {}
    marks.write_text(json.dumps({**recorded, name: digest}, indent=2) + "\n")


def _pause_archive(pause_binary: Path) -> bytes:
    """A one-layer Docker image archive holding ``/pause`` as its entrypoint."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tar.gettarinfo(str(pause_binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with pause_binary.open("rb") as handle:
            tar.addfile(info, handle)
    layer_bytes = layer.getvalue()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"]},
    }).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("layer.tar", layer_bytes), ("config.json", config), ("manifest.json", manifest)):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return archive.getvalue()


def import_pause(socket: Path, pause_binary: Path, marks: Path) -> str:
    archive = _pause_archive(pause_binary)
    digest = hashlib.sha256(archive).hexdigest()
    if _present(socket, PAUSE_IMAGE, digest, marks):
        return f"{PAUSE_IMAGE} present"
    _ctr(socket, "images", "import", "-", stdin=archive)
    _record(marks, PAUSE_IMAGE, digest)
    return f"{PAUSE_IMAGE} imported"


def import_runner(socket: Path, cache: Path, marks: Path, log: Log) -> tuple[str, str]:
    """Build (if needed) the s3 runner image in Docker and import it; returns ``(image, outcome)``."""
    built = runner_image.ensure_runner_image(cache / "images", log, storage="s3")
    image = runner_image.runner_image_name(storage="s3")
    return image, f"{built}; {import_docker_image(socket, image, marks, log)}"


def import_docker_image(socket: Path, image: str, marks: Path, log: Log) -> str:
    """Move ``image`` from the Docker engine into containerd, unless the same build is there already."""
    docker_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                               capture_output=True, text=True, check=True).stdout.strip()
    reference = f"docker.io/library/{image}"  # how containerd names an image saved as plain ``name:tag``
    with _marks_lock(marks):
        if _present(socket, reference, docker_id, marks):
            return f"{reference} present"
        log(f"  importing {image} into containerd (docker save | ctr import)")
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        assert save.stdout is not None
        try:
            _ctr(socket, "images", "import", "-", stdin=save.stdout)
        finally:
            save.stdout.close()
            if save.wait() != 0:
                raise ToolchainError(f"docker save {image} failed (exit {save.returncode})")
        _record(marks, reference, docker_id)
    return f"{reference} imported"


@contextmanager
def _marks_lock(marks: Path) -> Iterator[None]:
    """Sessions sharing the cluster import one at a time (the marks file is read, then rewritten)."""
    with marks.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
