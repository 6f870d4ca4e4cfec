"""Run stacks in a local ``file://`` state backend, created and cleaned up without a CLI process.

In Pulumi's DIY backend a stack *is* its checkpoint file,
``.pulumi/stacks/<project>/<stack>.json``, and its tags live beside it in
``<stack>.pulumi-tags``. ``pulumi stack init`` and ``pulumi stack tag set``
each start the CLI (0.3-0.4 s and 0.1-0.2 s on a 2-core machine) only to write
these two small files, so for a local backend the toolkit writes them itself,
in the CLI's own format: the tags first, then the checkpoint with ``O_EXCL``.
A stack therefore never exists without the owner tag ``toolkit gc`` judges it
by. The first ``pulumi up`` then creates the stack's secrets provider as
``stack init`` would have (the passphrase provider, whose salt it writes to the
stack's config file; the run key stays encrypted in state).

``pulumi destroy --remove`` leaves a copy of the emptied checkpoint
(``<stack>.json.bak``) which ``stack rm --remove-backups`` would have removed,
and the stack's empty update-history and lock directories (one pair per run,
never removed by the CLI); ``remove_leftovers`` deletes them. A client killed between two of these file
operations leaves a tags or backup file without a stack: ``sweep_orphans``
(run by ``toolkit gc``) removes those once they are old enough not to belong
to a stack being created right now.

Only where the layout is known: a ``file://`` backend whose ``meta.yaml``
declares the project-scoped layout (version 1), without compression or the
legacy layout forced by environment (``ensure_layout`` records that layout
in a new backend, as the CLI would). Elsewhere (object-store backends) the
engine uses the CLI.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

LAYOUT_VERSION = 1
"""``.pulumi/meta.yaml`` version of the project-scoped layout this module writes."""
TAGS_VERSION = 1
"""Version of the ``.pulumi-tags`` format (pkg/backend/diy/stack_tags.go)."""
ORGANIZATION = "organization"
"""The DIY backend's fixed organization name in fully qualified stack names."""
ORPHAN_GRACE_SECONDS = 300.0
"""Age after which a tags or backup file without its stack is an orphan, not a stack being created."""
_LAYOUT_OVERRIDES = tuple(
    f"PULUMI_{prefix}_{setting}"
    for prefix in ("DIY_BACKEND", "SELF_MANAGED_STATE")  # the CLI reads both names (sdk/go/common/env/env.go)
    for setting in ("GZIP", "ZSTD", "LEGACY_LAYOUT")
)
"""Settings under which the CLI looks for other files than this module writes (compressed, legacy layout)."""
_LEFTOVER_SUFFIXES = (".pulumi-tags", ".json.bak")
ATTRS = ".attrs"
"""Sidecar metadata file the CLI's blob store writes next to each file (optional when reading)."""


def _root(backend_url: str) -> Path | None:
    return Path(backend_url.removeprefix("file://")) if backend_url.startswith("file://") else None


def stacks_dir(backend_url: str, project: str) -> Path | None:
    """Where the project's stack files live, for a ``file://`` backend (else None)."""
    root = _root(backend_url)
    return root / ".pulumi" / "stacks" / project if root else None


def writable_layout(backend_url: str, env: dict[str, str]) -> bool:
    """True when stacks in ``backend_url`` can be created and removed by writing files here.

    ``env`` is the environment the CLI runs with: its layout and compression
    settings decide which files it looks for.
    """
    root = _root(backend_url)
    if root is None or any(env.get(name, "").lower() not in ("", "0", "false") for name in _LAYOUT_OVERRIDES):
        return False
    try:
        meta = (root / ".pulumi" / "meta.yaml").read_text()
    except OSError:
        return False
    return meta.split() == ["version:", str(LAYOUT_VERSION)]


def ensure_layout(backend_url: str) -> None:
    """Record the project-scoped layout in a new ``file://`` backend, as the CLI does on first use.

    The CLI writes ``meta.yaml`` (version 1) into a backend without one unless
    it already holds stacks of the legacy layout (``.pulumi/stacks/*.json``);
    so does this, so the first run on a new backend needs no CLI call either.
    """
    root = _root(backend_url)
    if root is None:
        return
    meta = root / ".pulumi" / "meta.yaml"
    legacy = root / ".pulumi" / "stacks"
    if meta.exists() or (legacy.is_dir() and any(legacy.glob("*.json*"))):
        return
    meta.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".meta.yaml.", dir=meta.parent)  # concurrent first runs each write
    with os.fdopen(fd, "w") as handle:
        handle.write(f"version: {LAYOUT_VERSION}\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, meta)


def create_stack(backend_url: str, project: str, stack: str, tags: dict[str, str]) -> None:
    """Create ``stack`` with ``tags``, as ``stack init`` + ``stack tag set`` would; fails if it exists."""
    directory = stacks_dir(backend_url, project)
    assert directory is not None, "only for file:// backends (see writable_layout)"
    directory.mkdir(parents=True, exist_ok=True)
    if tags:
        _write_atomically(directory / f"{stack}.pulumi-tags", {"version": TAGS_VERSION, "tags": tags})
    checkpoint = {"version": 0, "checkpoint": {"stack": f"{ORGANIZATION}/{project}/{stack}"}}
    try:
        fd = os.open(directory / f"{stack}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise FileExistsError(f"stack {stack!r} already exists in {backend_url}") from None
    with os.fdopen(fd, "w") as handle:
        json.dump(checkpoint, handle)


def set_tags(backend_url: str, project: str, stack: str, tags: dict[str, str]) -> None:
    """Replace the tags of an existing ``stack``, as ``stack tag set`` would (``up`` never writes them)."""
    directory = stacks_dir(backend_url, project)
    assert directory is not None, "only for file:// backends (see writable_layout)"
    _write_atomically(directory / f"{stack}.pulumi-tags", {"version": TAGS_VERSION, "tags": tags})


def bookkeeping_dirs(backend_url: str, project: str) -> list[Path]:
    """The directories holding one subdirectory per stack that the CLI creates and leaves behind:
    the update history (``.pulumi/history/<project>/<stack>``) and the lock
    (``.pulumi/locks/organization/<project>/<stack>``)."""
    root = _root(backend_url)
    if root is None:
        return []
    return [root / ".pulumi" / "history" / project, root / ".pulumi" / "locks" / ORGANIZATION / project]


def remove_leftovers(backend_url: str, project: str, stack: str) -> None:
    """Delete what the CLI keeps of a removed stack (``destroy --remove`` or ``stack rm``): its last checkpoint's
    backup, and its history and lock directories if they are empty (a lock file in one means an update holds it).
    Nothing for a backend that is not ``file://``."""
    directory = stacks_dir(backend_url, project)
    if directory is not None and not (directory / f"{stack}.json").exists():
        _remove(directory, stack, _LEFTOVER_SUFFIXES)
        for parent in bookkeeping_dirs(backend_url, project):
            _remove_empty(parent / stack)


def remove_unused_stack(backend_url: str, project: str, stack: str) -> None:
    """Delete a stack that never ran ``up`` (a preview's): its checkpoint, tags and their backups."""
    directory = stacks_dir(backend_url, project)
    assert directory is not None, "only for file:// backends (see writable_layout)"
    _remove(directory, stack, (".json", *_LEFTOVER_SUFFIXES))


def sweep_orphans(backend_url: str, project: str, older_than: float = ORPHAN_GRACE_SECONDS) -> list[str]:
    """Remove tags and backup files, and empty history and lock directories, older than ``older_than``
    seconds whose stack no longer exists."""
    directory = stacks_dir(backend_url, project)
    if directory is None or not directory.is_dir():
        return []
    removed = []
    before = time.time() - older_than
    for path in sorted(directory.iterdir()):
        suffix = next((s for s in _LEFTOVER_SUFFIXES if path.name.endswith(s)), None)
        if suffix is None:
            continue
        stack = path.name[: -len(suffix)]
        if _modified_before(path, before) and not (directory / f"{stack}.json").exists():
            _remove(directory, stack, (suffix,))
            removed.append(str(path))
    for parent in bookkeeping_dirs(backend_url, project):
        for path in sorted(parent.iterdir()) if parent.is_dir() else []:
            if _modified_before(path, before) and not (directory / f"{path.name}.json").exists() and _remove_empty(path):
                removed.append(str(path))
    return removed


def _modified_before(path: Path, moment: float) -> bool:
    """True when ``path`` was last modified before ``moment``; False if it is gone meanwhile."""
    try:
        return path.stat().st_mtime < moment
    except FileNotFoundError:
        return False


def _remove_empty(directory: Path) -> bool:
    """Remove ``directory`` if it exists and is empty; True when it did."""
    try:
        directory.rmdir()
    except OSError:  # missing, not empty, or not a directory: not ours to remove
        return False
    return True


def _remove(directory: Path, stack: str, suffixes: tuple[str, ...]) -> None:
    for suffix in suffixes:
        for name in (f"{stack}{suffix}", f"{stack}{suffix}{ATTRS}"):
            (directory / name).unlink(missing_ok=True)


def _write_atomically(path: Path, document: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)
