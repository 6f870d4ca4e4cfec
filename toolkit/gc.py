"""``toolkit gc``: find and destroy run stacks whose owner is gone or whose TTL passed.

Every run stack is tagged with its owner (host, pid, process start time),
creation time and TTL. A stack is collectable when its owner process on this
host no longer exists (or is another process that reused the pid), or when its
TTL has passed. A live owner's stack is never touched: on a shared backend,
owners on other hosts are judged by TTL only. A lock left by a dead process
(``pulumi`` killed mid-update) is broken before the destroy. Jobs of a dead
client's run that no stack held (made by a provider that outlived its engine)
are found by the run's label and removed once the stack is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pulumi import automation as auto

from toolkit import diy_backend, records, settings
from toolkit.backend_store import BackendStore
from toolkit.engine import RunStack, RunTag, describe_failure, list_run_stacks
from toolkit.errors import ConfigError, TargetUnavailableError
from toolkit.guardrails import history
from toolkit.guardrails.slots import stale_markers
from toolkit.pools.registry import PoolRegistry
from toolkit.workspace import break_stale_lock, current_user, owner_alive


@dataclass
class Leak:
    stack: str
    backend_url: str
    reason: str
    age_seconds: float | None
    destroyed: bool = False
    error: str | None = None


@dataclass
class Unreadable:
    """A backend gc could not search (an object store whose credentials this process lacks, say)."""

    backend_url: str
    error: str


@dataclass
class LeakSearch:
    """What gc found: the collectable stacks of the backends it could read, and those it could not.

    One unreadable backend hides nothing in the others: it is reported beside their leaks.
    """

    leaks: list[Leak] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)


@dataclass
class StrayJobs:
    """Jobs of a dead client's run that no stack held, found by the run's label (``Target.stray_jobs``)."""

    run_id: str
    target: str
    names: list[str]
    removed: bool


@dataclass
class Collected(LeakSearch):
    """What one ``toolkit gc`` destroyed (or would, in a dry run): the leaks, and the stray jobs of dead runs."""

    stray_jobs: list[StrayJobs] = field(default_factory=list)
    unsearched: list[str] = field(default_factory=list)
    """Targets whose platform gc could not ask for stray jobs, with why (a Docker engine that does not answer)."""


def judge(tags: dict[str, str], now: float) -> tuple[str | None, float | None]:
    """``(reason to collect or None, age in seconds)`` for one stack's tags."""
    run = RunTag.from_tags(tags)
    if run is None:
        return "no owner tag (its client died while creating it)", None
    age = now - run.created
    if owner_alive(run.owner) is False:
        return f"owner {run.owner} is gone", age
    if age > run.ttl:
        return f"TTL of {run.ttl:.0f}s passed (age {age:.0f}s)", age
    return None, age


def backend_urls() -> list[str]:
    """Backends that may hold run stacks: the default, every pool's, every recorded run's."""
    urls = {settings.default_backend_url()}
    urls.update(pool.backend_url for pool in PoolRegistry().list() if pool.backend_url)
    urls.update(record.backend_url for record in records.all_records())
    return sorted(urls)


def _stack_run_id(stack: str) -> str:
    return stack.removeprefix("run-")


def _local_record(stack: str) -> records.RunRecord | None:
    try:
        return records.load(_stack_run_id(stack))
    except ConfigError:
        return None  # a stack of another machine's client


def find_leaks(
    older_than: float | None = None,
    urls: list[str] | None = None,
    stacks: Callable[[str], list[tuple[str, dict[str, str]]]] | None = None,
) -> LeakSearch:
    """Collectable stacks, searched backend by backend. A local run record refines the tags: it protects a
    live client's stack that has no tags yet, and gives up one whose client's own teardown failed.
    ``stacks`` lists a backend's run stacks with their tags (default ``list_run_stacks``; the dashboard reads
    them from its own listing)."""
    now = time.time()
    search = LeakSearch()
    for url in urls or backend_urls():
        try:
            listed = (stacks or list_run_stacks)(url)
        except Exception as exc:  # noqa: BLE001 - reported per backend; the others are searched all the same
            search.unreadable.append(Unreadable(url, f"{type(exc).__name__}: {exc}"))
            continue
        for name, tags in listed:
            leak = _judge_stack(name, tags, url, now, older_than)
            if leak is not None:
                search.leaks.append(leak)
    return search


def _judge_stack(name: str, tags: dict[str, str], url: str, now: float, older_than: float | None) -> Leak | None:
    reason, age = judge(tags, now)
    record = _local_record(name)
    if record is not None and record.teardown_failed and not record.torn_down:
        reason = reason or "its client's teardown failed"
    elif reason is not None and RunTag.from_tags(tags) is None and record is not None:
        if not record.torn_down and owner_alive(record.owner) is True:
            return None
    if reason is None or (older_than is not None and (age is None or age < older_than)):
        return None
    return Leak(name, url, reason, age)


def destroy_stack(stack: str, backend_url: str) -> None:
    """Destroy and remove one run stack, breaking a dead process's lock if needed.

    The secrets provider needs no setting here: the stack's state names it (with
    its encrypted data key), and the CLI reaches a cloud KMS with this process's
    environment, as the stack's owner did.
    """
    existing = RunStack.existing(stack, backend_url)
    run_id = _stack_run_id(stack)
    try:
        run = RunTag.from_tags(existing.stack.list_tags())
        if run is None or owner_alive(run.owner) is False:
            stop_engine_processes(run_id, spare=existing.work_dir)
        try:
            changes = existing.destroy_once()
        except auto.errors.ConcurrentUpdateError:
            if not break_stale_lock(stack, backend_url):
                raise
            changes = existing.destroy_once()
    finally:
        existing.close()
    deleted = changes.get("delete", 0)
    _record_collected(backend_url, run_id, run, resources=max(deleted - 1, 0))  # minus the Stack resource itself
    if run is None or owner_alive(run.owner) is False:
        remove_workspace_dirs(run_id)
    try:
        record = records.load(run_id)
    except Exception:  # noqa: BLE001 - stacks from other clients have no local record
        return
    if record.state not in records.TERMINAL_STATES:
        record.update(state="failed", error="its client died; collected by toolkit gc")
    record.update(torn_down=True)
    shutil.rmtree(record.result_spool, ignore_errors=True)  # a map's results nobody will read now


def stop_engine_processes(run_id: str, spare: Path | None = None, wait: float = 10.0) -> list[int]:
    """SIGKILL what still runs in a dead client's Pulumi workspace directories of the run; returns their pids.

    Its CLI and the provider plugins that CLI started run there (their working
    directory). Killed with their client, a CLI dies when it next writes to its
    closed output, but its plugins live on: a docker provider waits for good and
    first finishes the containers it was creating, after the state was last
    written. Stopped before the destroy, they neither hold the stack's lock nor make
    anything after it. ``spare``: this process's own workspace for the stack.
    """
    prefix = os.path.join(tempfile.gettempdir(), f"toolkit-{run_id}-")
    stopped = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = os.readlink(entry / "cwd") if entry.name.isdigit() else ""
        except OSError:  # gone meanwhile, or another user's
            continue
        if cwd.startswith(prefix) and not (spare and Path(cwd.removesuffix(" (deleted)")).is_relative_to(spare)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                stopped.append(int(entry.name))
    deadline = time.monotonic() + wait
    while any(Path(f"/proc/{pid}").exists() for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stopped


def remove_workspace_dirs(run_id: str) -> None:
    """The Pulumi workspace directories a dead client made for the run (``engine.RunStack``'s
    ``toolkit-<run id>-*`` in the temporary directory), which only its own teardown removes."""
    for path in Path(tempfile.gettempdir()).glob(f"toolkit-{run_id}-*"):
        shutil.rmtree(path, ignore_errors=True)


def _record_collected(backend_url: str, run_id: str, run: RunTag | None, resources: int) -> None:
    """The audit entry of a run whose client never wrote one (it died); best effort."""
    if run is None:
        return
    try:
        entry = history.RunEntry(
            run_id=run_id, pool=run.pool, function=run.function, user=current_user(), owner=run.owner,
            resources=resources, outcome="failed", error="its client died; collected by toolkit gc",
            created=run.created, finished=time.time(),
        )
        history.record(BackendStore(backend_url), entry)
    except Exception:  # noqa: BLE001 - a Pulumi Cloud backend keeps no history; gc goes on
        pass


@dataclass
class Pruned:
    backend_url: str
    history_entries: int = 0
    slot_markers: int = 0
    error: str | None = None


def prune_records(
    history_older_than: float = history.DEFAULT_RETENTION, urls: list[str] | None = None
) -> list[Pruned]:
    """Drop audit entries past the retention and slot markers of dead runs, in every backend."""
    pruned = []
    for url in urls or backend_urls():
        try:
            store = BackendStore(url)
        except ConfigError:
            continue  # a Pulumi Cloud backend holds neither
        try:
            stale = stale_markers(store)
            for relative in stale:
                store.remove(relative)
            pruned.append(Pruned(url, history.prune(store, history_older_than), len(stale)))
        except Exception as exc:  # noqa: BLE001 - report per backend, keep pruning the others
            pruned.append(Pruned(url, error=f"{type(exc).__name__}: {exc}"))
    return pruned


def collect(older_than: float | None = None, dry_run: bool = False, urls: list[str] | None = None) -> Collected:
    """Destroy collectable stacks; also deletes stack files a killed client left without their stack,
    run storage no stack recorded (``sweep_unrecorded_storage``), its staged bundles (``sweep_staged``),
    jobs no stack held (``sweep_stray_jobs``) and Pulumi workspaces no stack kept (``sweep_workspaces``).
    A backend it cannot read is reported (``LeakSearch.unreadable``) and the others collected all the same."""
    urls = urls or backend_urls()
    search = find_leaks(older_than, urls)
    collected = Collected(search.leaks, search.unreadable)
    going = {(leak.backend_url, leak.stack) for leak in search.leaks}
    if dry_run:
        collected.stray_jobs, collected.unsearched = sweep_stray_jobs(going, remove=False)
        return collected
    for url in urls:
        diy_backend.sweep_orphans(url, settings.RUN_PROJECT)
    for leak in search.leaks:
        try:
            destroy_stack(leak.stack, leak.backend_url)
            leak.destroyed = True
        except Exception as exc:  # noqa: BLE001 - report per stack, keep collecting the others
            leak.error = f"{type(exc).__name__}: {describe_failure(exc, leak.stack, leak.backend_url)}"
    sweep_unrecorded_storage({(leak.backend_url, leak.stack) for leak in search.leaks if not leak.destroyed})
    sweep_staged()
    destroyed = {(leak.backend_url, leak.stack) for leak in search.leaks if leak.destroyed}
    collected.stray_jobs, collected.unsearched = sweep_stray_jobs(destroyed, remove=True)
    sweep_workspaces(destroyed)
    return collected


def sweep_stray_jobs(gone: set[tuple[str, str]], remove: bool) -> tuple[list[StrayJobs], list[str]]:
    """Remove the jobs of dead clients' runs that no stack holds; returns them, and the targets it could not ask.

    A client killed during ``up`` leaves the engine's provider working on: a job it
    creates after the engine last wrote the state (a map's worker container) is in
    no stack, so destroying the stack leaves it. Such a run's jobs are found by its
    label (``Target.stray_jobs``) once its stack is gone: destroyed by this gc
    (``gone``) or before. Only runs recorded on this machine whose owner here is
    dead and whose own client never finished tearing them down.
    """
    from toolkit.infra.registry import get_target

    candidates: dict[str, dict[str, records.RunRecord]] = {}
    for record in _dead_runs():
        candidates.setdefault(record.target, {})[record.run_id] = record
    found: list[StrayJobs] = []
    unsearched: list[str] = []
    stacks: dict[str, set[str] | None] = {}
    for target_name, runs in sorted(candidates.items()):
        try:
            target = get_target(target_name)
        except (TargetUnavailableError, ConfigError):
            continue  # unregistered, or its SDK gone from this installation: no way here to reach its platform
        try:
            present = target.stray_jobs(set(runs), remove=False)  # listed first: most runs have none
            stray = {run_id for run_id in present if _stack_gone(runs[run_id], gone, stacks)}
            removed = target.stray_jobs(stray, remove=True) if remove and stray else {}
        except Exception as exc:  # noqa: BLE001 - report per target, keep sweeping the others
            unsearched.append(f"{target_name}: {type(exc).__name__}: {exc}")
            continue
        for run_id in sorted(stray):
            found.append(StrayJobs(run_id, target_name, removed.get(run_id, present[run_id]), remove))
    return found, unsearched


def sweep_workspaces(gone: set[tuple[str, str]]) -> list[str]:
    """Remove the Pulumi workspace directories of dead clients' runs whose stacks are gone; returns them.

    ``destroy_stack`` removes a dead client's workspace with its stack; a client
    killed before its stack existed, or while its own destroy had removed the stack
    but not yet its workspace, leaves one with no stack for gc to destroy. What
    still runs in it is stopped first.
    """
    removed: list[str] = []
    stacks: dict[str, set[str] | None] = {}
    for record in _dead_runs():
        paths = sorted(str(path) for path in Path(tempfile.gettempdir()).glob(f"toolkit-{record.run_id}-*"))
        if paths and _stack_gone(record, gone, stacks):
            stop_engine_processes(record.run_id)
            remove_workspace_dirs(record.run_id)
            removed += paths
    return removed


def _dead_runs() -> list[records.RunRecord]:
    """Runs recorded here whose owner on this host is dead and whose own client never finished tearing them down."""
    return [record for record in records.all_records()
            if owner_alive(record.owner) is False and not any(mark.phase == "torn down" for mark in record.phases)]


def _stack_gone(record: records.RunRecord, gone: set[tuple[str, str]], stacks: dict[str, set[str] | None]) -> bool:
    """The run's stack is destroyed (``gone``) or no longer in its backend; ``stacks`` caches the listings."""
    if (record.backend_url, record.stack) in gone:
        return True
    if record.backend_url not in stacks:
        stacks[record.backend_url] = _stack_names(record.backend_url)
    listed = stacks[record.backend_url]
    return listed is not None and record.stack not in listed


def sweep_staged() -> list[str]:
    """Remove what dead clients staged for their runs (``$TOOLKIT_HOME/staging``); returns the names removed.

    A call with ``retries`` keeps its bundle (and a map its items) staged until the
    run ends, as a retry's ``up`` reads them again; a client killed meanwhile
    leaves them. Those of runs whose owner on this host is gone go. A staged file
    with no run record yet is a live client's, preparing that run: it stays.
    """
    staging = settings.home() / "staging"
    if not staging.is_dir():
        return []
    owners = {record.run_id: record.owner for record in records.all_records()}
    removed = []
    for path in sorted(staging.iterdir()):
        owner = owners.get(path.name.split(".")[0])
        if owner is None or owner_alive(owner) is not False:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def sweep_unrecorded_storage(kept: set[tuple[str, str]]) -> list[str]:
    """Remove the run storage of dead clients' runs that no stack holds; returns the URLs removed.

    The client serves its runs' storage and process jobs itself
    (``providers/resident.py``): killed between its provider creating one and the
    engine recording it, the storage is in no stack's state. A run whose record
    is not torn down, whose owner on this host is gone and whose stack no longer
    exists (``kept``: stacks still there) has its storage removed here, with any
    job still running in it (``stop_recorded``). Only storage the run's
    ``RunStorage`` owns: a local run directory or a pool's shared prefix.
    """
    from toolkit.infra.registry import get_target
    from toolkit.providers.run_storage import RunStorageProvider, local_path

    removed: list[str] = []
    pools = {pool.name: pool for pool in PoolRegistry().list()}
    stacks: dict[str, set[str] | None] = {}
    for record in records.all_records():
        if record.torn_down or owner_alive(record.owner) is not False or (record.backend_url, record.stack) in kept:
            continue
        if record.backend_url not in stacks:
            stacks[record.backend_url] = _stack_names(record.backend_url)
        if stacks[record.backend_url] is None or record.stack in stacks[record.backend_url]:
            continue  # its stack is still there, or nobody can tell here
        pool = pools.get(record.pool)
        shared = pool.storage.url if pool is not None and pool.storage.mode == "shared-prefix" else None
        try:
            url, _ = get_target(record.target).storage_url(record.run_id, shared)
        except Exception:  # noqa: BLE001 - a target this installation lacks: nothing it can remove
            continue
        if shared is None and local_path(url) is None:
            continue  # a bucket of the run's own stack: gone with it
        options = dict(pool.storage.options) if pool is not None and shared else {}
        RunStorageProvider().delete(url, {"url": url, "options": options})
        record.update(torn_down=True)
        removed.append(url)
    return removed


def _stack_names(backend_url: str) -> set[str] | None:
    """The run stacks in ``backend_url``; None when it cannot be read (``find_leaks`` reports why)."""
    try:
        return {name for name, _tags in list_run_stacks(backend_url)}
    except Exception:  # noqa: BLE001 - an unreadable backend: its runs are left for a gc that can read it
        return None
