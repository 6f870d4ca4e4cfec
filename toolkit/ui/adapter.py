"""The dashboard's one door into the rest of the toolkit: what it reads, and the actions it takes.

Every toolkit module the dashboard uses is imported here and nowhere else in
``toolkit.ui``, so a module that moves or a name that changes elsewhere is
followed in this file alone. It hands out the toolkit's own models (run
records, audit entries, pools, environments) and a few plain ones of its own.

Live run stacks are read from the state backend's files (a self-managed
backend keeps a stack as ``.pulumi/stacks/<project>/<stack>.json`` with its tags
in ``<stack>.pulumi-tags``, on local disk and in a bucket alike): one listing
and a small read per stack instead of a CLI process per stack, so the list stays
live. A Pulumi Cloud backend, or a layout this does not know, goes through the
CLI (``engine.list_run_stacks``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from toolkit import records, settings
from toolkit.backend_store import BackendStore
from toolkit.engine import RunTag, list_run_stacks
from toolkit.environments import manage as environments
from toolkit.errors import ConfigError, ToolkitError
from toolkit.gc import LeakSearch, backend_urls, destroy_stack, find_leaks, judge
from toolkit.guardrails import history
from toolkit.guardrails.slots import occupancy
from toolkit.pools.registry import PoolRegistry, WorkPool
from toolkit.workspace import current_user, owner_alive

RunRecord = records.RunRecord
RunEntry = history.RunEntry
ActionEntry = history.ActionEntry
EnvironmentInfo = environments.EnvironmentInfo
TERMINAL_STATES = records.TERMINAL_STATES
RUN_PROJECT = settings.RUN_PROJECT
VIA = "toolkit ui"


# -- where things are ------------------------------------------------------------------------


def watched_backends(chosen: str | None) -> list[str]:
    """``--backend``, else every backend gc knows: the default one, each pool's, each recorded run's."""
    return [chosen] if chosen else backend_urls()


def runs_dir() -> Path:
    return settings.runs_dir()


def read_record(run_id: str) -> RunRecord | None:
    """This machine's record of a run (None for another client's run, or one being written)."""
    path = settings.runs_dir() / run_id / "record.json"
    try:
        return RunRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def logs_path(run_id: str) -> Path:
    return settings.runs_dir() / run_id / "logs.txt"


def items_journal(run_id: str) -> Path:
    return RunRecord.items_journal_of(run_id)


# -- the audit trail ----------------------------------------------------------------------------


def store(backend_url: str) -> BackendStore | None:
    try:
        return BackendStore(backend_url)
    except ConfigError:
        return None  # a Pulumi Cloud backend keeps no audit trail


def history_days(backend: BackendStore) -> list[str]:
    return backend.names(history.HISTORY)


def history_names(backend: BackendStore, day: str) -> list[str]:
    return [name for name in backend.names(f"{history.HISTORY}/{day}") if name.endswith(".json")]


def read_entry(backend: BackendStore, day: str, name: str) -> RunEntry | None:
    try:
        return RunEntry.model_validate_json(backend.fs.cat_file(backend.path(history.HISTORY, day, name)))
    except (FileNotFoundError, ValueError):
        return None


def actions(backend_url: str) -> list[ActionEntry]:
    backend = store(backend_url)
    return history.actions(backend) if backend is not None else []


def record_action(backend_url: str, action: str, subject: str, outcome: str) -> None:
    backend = store(backend_url)
    if backend is not None:
        entry = ActionEntry(action=action, subject=subject, user=current_user(), via=VIA,
                            at=time.time(), outcome=outcome)
        history.record_action(backend, entry)


# -- live run stacks ----------------------------------------------------------------------------


class LiveStack(BaseModel):
    """A run stack in a backend: its gc tag, and why gc would collect it (None: it would not)."""

    name: str
    backend_url: str
    tag: RunTag | None
    leak: str | None
    age: float | None

    @property
    def run_id(self) -> str:
        return self.name.removeprefix("run-")


def _stacks_dir(backend: BackendStore) -> str:
    return backend.root.rsplit("/", 1)[0] + f"/.pulumi/stacks/{RUN_PROJECT}"


def _project_layout(backend: BackendStore) -> bool:
    try:
        meta = backend.fs.cat_file(backend.root.rsplit("/", 1)[0] + "/.pulumi/meta.yaml").decode()
    except (FileNotFoundError, OSError, UnicodeDecodeError):
        return False
    return meta.split() == ["version:", "1"]


def files_readable(backend_url: str) -> bool:
    """Whether the backend's stacks can be read as files (else each listing costs CLI processes)."""
    backend = store(backend_url)
    return backend is not None and _project_layout(backend)


def run_stack_tags(backend_url: str) -> list[tuple[str, dict[str, str]]]:
    """Every run stack of ``backend_url`` with its tags: from the backend's files where it can."""
    backend = store(backend_url)
    if backend is None or not _project_layout(backend):
        return list_run_stacks(backend_url)
    directory = _stacks_dir(backend)
    backend.fs.invalidate_cache(directory)
    try:
        names = [path.rsplit("/", 1)[-1] for path in backend.fs.ls(directory, detail=False)]
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stack = name.removesuffix(".gz").removesuffix(".json") if name.endswith((".json", ".json.gz")) else None
        if stack is None:
            continue
        tags: dict[str, str] = {}
        if f"{stack}.pulumi-tags" in names:
            try:
                tags = json.loads(backend.fs.cat_file(f"{directory}/{stack}.pulumi-tags")).get("tags") or {}
            except (FileNotFoundError, ValueError):
                tags = {}
        found.append((stack, tags))
    return found


def live_stacks(backend_url: str) -> list[LiveStack]:
    now = time.time()
    stacks = []
    for name, tags in run_stack_tags(backend_url):
        leak, age = judge(tags, now)
        stacks.append(LiveStack(name=name, backend_url=backend_url, tag=RunTag.from_tags(tags), leak=leak, age=age))
    return stacks


class StackResource(BaseModel):
    urn: str
    type: str
    parent: str | None
    status: str


def stack_resources(backend_url: str, stack: str) -> list[StackResource]:
    """The resources in a live stack's checkpoint: URN, type, parent and whether an operation is
    pending on it. Nothing else of the checkpoint is read (inputs and outputs stay where they are)."""
    backend = store(backend_url)
    if backend is None:
        return []
    try:
        document = json.loads(backend.fs.cat_file(f"{_stacks_dir(backend)}/{stack}.json"))
    except (FileNotFoundError, ValueError, OSError):
        return []
    latest = (document.get("checkpoint") or {}).get("latest") or {}
    pending = {operation.get("resource", {}).get("urn"): operation.get("type", "")
               for operation in latest.get("pending_operations") or []}
    found = []
    for resource in [*(latest.get("resources") or []), *(op.get("resource", {}) for op in latest.get("pending_operations") or [])]:
        urn = resource.get("urn")
        if not urn or any(item.urn == urn for item in found):
            continue
        status = pending.get(urn) or ("deleted" if resource.get("delete") else "created")
        found.append(StackResource(urn=urn, type=resource.get("type", ""), parent=resource.get("parent") or None,
                                   status=status))
    return found


def leaks(urls: list[str]) -> LeakSearch:
    """What ``toolkit gc`` would destroy in ``urls`` now (nothing is destroyed), and the backends it could not
    search, with why: one unreachable backend (no credentials here, say) hides nobody else's leaks."""
    return find_leaks(urls=urls, stacks=run_stack_tags)


# -- pools and environments ---------------------------------------------------------------------


def pools() -> list[WorkPool]:
    return PoolRegistry().list()


def pool(name: str) -> WorkPool:
    return PoolRegistry().get(name)


def pool_backend(pool_: WorkPool) -> str:
    return pool_.backend_url or settings.default_backend_url()


def slots_in_use(pool_: WorkPool) -> int | None:
    """Live slot markers of a pool with ``max_concurrent_runs`` (None: the pool has no limit)."""
    if not pool_.max_concurrent_runs:
        return None
    backend = store(pool_backend(pool_))
    return occupancy(backend, pool_.name).others if backend is not None else None


class PoolChange(BaseModel):
    """One publication of a pool managed as code (``WorkPoolResource``): when, by whom, what."""

    op: str
    at: float
    user: str
    document: dict[str, Any] | None


def pool_changes(name: str) -> list[PoolChange]:
    registry = PoolRegistry()
    return [PoolChange.model_validate(change) for change in registry.changes(name)]


def environment_list(backend_url: str) -> list[EnvironmentInfo]:
    return environments.list_environments(backend_url)


# -- actions ------------------------------------------------------------------------------------


def cancel(run_id: str, stack: LiveStack | None) -> str:
    """Cancel a run: its own client tears it down when it lives on this machine ("requested");
    a run whose client is gone has its stack destroyed here ("done"). Another machine's client
    is left alone: only it knows whether its job still runs."""
    record = read_record(run_id)
    if record is not None and record.torn_down:
        raise ConfigError(f"run {run_id} is {record.state} and its stack is gone already")
    if record is not None and owner_alive(record.owner):
        record.request_cancel()
        return "requested"
    if stack is None:
        raise ConfigError(f"run {run_id} has no stack to destroy")
    owner = stack.tag.owner if stack.tag else (record.owner if record else "")
    if record is None and owner_alive(owner) is not False and stack.leak is None:
        raise ConfigError(
            f"run {run_id} belongs to a live client ({owner or 'unknown'}): cancel it there with "
            f"`toolkit runs cancel {run_id}`, or wait until gc may collect it"
        )
    destroy_stack(stack.name, stack.backend_url)
    return "done"


def collect(stack: LiveStack) -> None:
    """Destroy one leaked run stack, as ``toolkit gc`` would, if gc would still collect it now."""
    if not any(leak.stack == stack.name for leak in leaks([stack.backend_url]).leaks):
        raise ConfigError(f"stack {stack.name} is not a leak (any more): gone, or its owner is alive and within its TTL")
    destroy_stack(stack.name, stack.backend_url)


def prune_environment(stack: str, backend_url: str) -> str | None:
    """Destroy one environment stack (and its image); returns what the registry kept, if anything."""
    results = environments.prune(backend_url=backend_url, stacks=[stack])
    if not results:
        raise ConfigError(f"no environment stack {stack!r} in {backend_url}")
    if results[0].error:
        raise ToolkitError(results[0].error)
    return results[0].left_in_registry

