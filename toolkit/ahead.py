"""The engine started ahead: a client's next call on a pool finds its ``pulumi up`` already started.

Why: about 0.6 s of a call's submit→result is the CLI starting (process,
backend, secrets manager, language host) before the engine asks for the
program; none of it depends on the call. A client that has made a second call
on a pool is likely to make a third, so from then on it keeps one ``pulumi up``
of a fresh run stack started (a ``Standby``) whose inline program waits. The
next call's ``prepare`` takes that run id (``submission``: the id names the
stack, the storage and the record, and is rendered into the job), and its
``up`` hands the waiting engine the call's program (``stack_for``).

A standby no call claims within ``IDLE_BOUND`` seconds runs an empty program
and its stack is removed; so does every standby when the client is done
(``release_waiting``, from ``futures.wait_for_teardowns`` and the atexit hook,
which also forget the calls counted, so a client starts over at one call).
A one-call client starts none. The stack carries a gc tag with this client as
owner from the start, so a killed client's standby is what ``toolkit gc``
finds and destroys, like any run stack of a dead owner; a claimed standby gets
its call's tag when the call's program is handed over.

Opt-in (``TOOLKIT_ENGINE_AHEAD=1``, ``settings.engine_ahead``). Only for pools
whose run stacks are created as files (a writable ``file://`` backend, the
passphrase secrets), without policy packs (their preview would
run beside the waiting ``up``) and without a concurrency limit (a call may
wait for its slot); single calls only (a map's stack is shaped by its items).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from toolkit import diy_backend, settings
from toolkit.engine import RUN_TAG, RunStack, RunTag
from toolkit.pools.registry import WorkPool
from toolkit.preparation import new_run_id
from toolkit.progress import Progress
from toolkit.workspace import owner_tag

IDLE_BOUND = 60.0
"""Seconds a standby waits for a call before it runs an empty program and its stack is removed."""
HAND_OVER_BOUND = 600.0
"""Seconds a claimed standby waits for its call's ``up`` (a call whose preparation fails releases it at once)."""
STANDBY_FUNCTION = "(started ahead)"
"""The ``function`` of a standby's gc tag until a call claims it."""

_Key = tuple[str, str, str]
"""(pool name, backend URL, secrets provider): what a standby's stack is made for."""


class Standby:
    """One ``pulumi up`` of a fresh run stack, started before any call needs it; its program waits."""

    def __init__(self, pool_name: str, backend_url: str, secrets_provider: str) -> None:
        self.run_id = new_run_id()
        self.state = "waiting"  # -> claimed -> handed; or -> expired (no call in time) / released (client done)
        self._changed = threading.Condition()
        self._program: Callable[[], None] | None = None
        self.asked = threading.Event()
        """Set once the started engine asks for the program."""
        self._call_progress: Progress | None = None
        own = Progress(self.run_id, show=False)
        forward = own.on_event

        def on_event(event: Any) -> None:  # the engine's events go to the call's Progress once handed over
            (self._call_progress.on_event if self._call_progress else forward)(event)

        own.on_event = on_event  # type: ignore[method-assign]
        tag = RunTag(pool=pool_name, function=STANDBY_FUNCTION, owner=owner_tag(os.getpid()), created=time.time(),
                     ttl=IDLE_BOUND + HAND_OVER_BOUND + 3600)
        self.stack = RunStack(self.run_id, backend_url, self._wait_for_program, own, tag=tag,
                              secrets_provider=secrets_provider)
        if not self.stack.made_of_files:  # its gc tag is written by the CLI, which a call's tag could not replace
            self.stack.close()
            raise ValueError(f"run stacks in {backend_url} are not made of files")
        self.outputs: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.removed = threading.Event()
        self._thread = threading.Thread(target=self._up, name=f"toolkit-ahead-{self.run_id}", daemon=True)
        self._thread.start()

    def _wait_for_program(self) -> None:
        """The inline program the engine asks for once started: the call's, or nothing."""
        self.asked.set()
        with self._changed:
            if not self._changed.wait_for(lambda: self.state != "waiting", timeout=IDLE_BOUND):
                self.state = "expired"
            self._changed.wait_for(lambda: self.state != "claimed", timeout=HAND_OVER_BOUND)
            if self.state == "claimed":
                self.state = "released"
            program = self._program if self.state == "handed" else None
        if program is not None:
            program()

    def _up(self) -> None:
        try:
            self.outputs = self.stack.up()
        except BaseException as exc:  # noqa: BLE001 - raised by the call's up(), or the stack is destroyed
            self.error = exc
        with self._changed:
            if self.state == "waiting":  # the engine ended before it asked for a program
                self.state = "expired"
            unclaimed = self.state in ("expired", "released")  # a handed one is its call's to destroy
        if unclaimed:
            self._remove()

    def _remove(self) -> None:
        """After an empty program the stack holds only its ``Stack`` resource: its files go without a CLI."""
        try:
            if self.error is None and self._only_the_stack_resource():
                diy_backend.remove_unused_stack(self.stack.backend_url, settings.RUN_PROJECT, self.stack.name)
                history = diy_backend.bookkeeping_dirs(self.stack.backend_url, settings.RUN_PROJECT)[0]
                shutil.rmtree(history / self.stack.name, ignore_errors=True)  # the empty update's record
                diy_backend.remove_leftovers(self.stack.backend_url, settings.RUN_PROJECT, self.stack.name)
                self.stack.close()
            else:
                self.stack.destroy_and_remove()
        except Exception:  # noqa: BLE001 - the stack stays tagged with this client: `toolkit gc` collects it
            pass
        finally:
            self.removed.set()

    def _only_the_stack_resource(self) -> bool:
        directory = diy_backend.stacks_dir(self.stack.backend_url, settings.RUN_PROJECT)
        if directory is None:
            return False
        checkpoint = json.loads((directory / f"{self.stack.name}.json").read_text())
        resources = checkpoint.get("checkpoint", {}).get("latest", {}).get("resources") or []
        return all(item.get("type") == "pulumi:pulumi:Stack" for item in resources)

    def claim(self) -> bool:
        """Reserve this engine for the call being prepared; False once it has expired."""
        with self._changed:
            if self.state != "waiting":
                return False
            self.state = "claimed"
            self._changed.notify_all()
            return True

    def hand(self, program: Callable[[], None], progress: Progress, tag: RunTag) -> dict[str, Any]:
        """Give the claimed engine the call's program and gc tag; returns the stack's outputs as ``up`` does."""
        with self._changed:
            if self.state != "claimed":
                raise RuntimeError(f"the engine started ahead for run {self.run_id} is {self.state}")
            diy_backend.set_tags(self.stack.backend_url, settings.RUN_PROJECT, self.stack.name,
                                 {RUN_TAG: tag.model_dump_json()})
            self.stack.progress = self._call_progress = progress
            self._program, self.state = program, "handed"
            self._changed.notify_all()
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs

    def release(self) -> None:
        """No call will come (or the claiming call ended before its ``up``): empty program, stack removed."""
        with self._changed:
            if self.state in ("waiting", "claimed"):
                self.state = "released"
                self._changed.notify_all()
            handed = self.state == "handed"
        if not handed:
            self.removed.wait()


class HandedStack:
    """A call's ``RunStack`` on a claimed standby: its first ``up`` is the standby's; the rest is the stack's."""

    def __init__(self, standby: Standby, program: Callable[[], None], progress: Progress, tag: RunTag) -> None:
        self._standby, self._program, self._progress, self._tag = standby, program, progress, tag
        self._handed = False

    def up(self) -> dict[str, Any]:
        if self._handed:
            return self._standby.stack.up()
        self._handed = True
        return self._standby.hand(self._program, self._progress, self._tag)

    def destroy_and_remove(self) -> None:
        if self._handed:
            self._standby.stack.destroy_and_remove()
        else:  # cancelled before its up: the engine gets an empty program
            self._standby.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._standby.stack, name)


_lock = threading.Lock()
_calls: dict[_Key, int] = {}
_ready: dict[_Key, Standby] = {}
_claimed: dict[str, Standby] = {}


def _key(pool: WorkPool) -> _Key | None:
    """What a standby for ``pool`` is made for; None when its runs cannot take one (module docstring)
    or the client has not opted in (``settings.engine_ahead``)."""
    if not settings.engine_ahead() or pool.policy_packs or pool.max_concurrent_runs:
        return None
    backend_url = pool.backend_url or settings.default_backend_url()
    secrets_provider = settings.secrets_provider(pool.secrets_provider)
    if not backend_url.startswith("file://") or secrets_provider != settings.PASSPHRASE:
        return None
    return pool.name, backend_url, secrets_provider


def _take(key: _Key | None) -> str:
    """A waiting standby's run id for a call on ``key``, claimed; else a fresh one."""
    if key is None:
        return new_run_id()
    with _lock:
        standby = _ready.pop(key, None)
        if standby is not None and standby.claim():
            _claimed[standby.run_id] = standby
            return standby.run_id
    return new_run_id()


def _submitted(key: _Key) -> None:
    """A call on ``key`` was submitted: from the client's second on, start the next call's engine."""
    with _lock:
        _calls[key] = _calls.get(key, 0) + 1
        waiting = _ready.get(key)
        if _calls[key] < 2 or (waiting is not None and waiting.state == "waiting"):
            return
        try:
            _ready[key] = Standby(*key)
        except Exception:  # noqa: BLE001 - no standby: the next call starts its engine itself
            pass


@contextmanager
def submission() -> Iterator[Callable[[WorkPool], str]]:
    """``run_id_for`` of one submission: a waiting standby's run id, else a fresh one.

    A submission that fails (bad input, ...) releases the standby it claimed and counts for nothing;
    one that succeeds counts as a call on its pool and may start the next call's engine."""
    keys: list[_Key | None] = []
    taken: list[str] = []

    def run_id_for(pool: WorkPool) -> str:
        keys.append(_key(pool))
        taken.append(_take(keys[-1]))
        return taken[-1]

    try:
        yield run_id_for
    except BaseException:
        for run_id in taken:
            _release_claim(run_id)
        raise
    for key in keys:
        if key is not None:
            _submitted(key)


def _release_claim(run_id: str) -> None:
    with _lock:
        standby = _claimed.pop(run_id, None)
    if standby is not None:
        standby.release()


def stack_for(run_id: str, program: Callable[[], None], progress: Progress, tag: RunTag,
              make: Callable[[], RunStack]) -> RunStack | HandedStack:
    """The stack of a call's run: its claimed standby's, else ``make()``."""
    with _lock:
        standby = _claimed.pop(run_id, None)
    if standby is None:
        return make()
    return HandedStack(standby, program, progress, tag)


def release_waiting() -> None:
    """Every standby no call has claimed runs an empty program and is removed; the calls counted are forgotten."""
    with _lock:
        standbys = list(_ready.values())
        _ready.clear()
        _calls.clear()
    for standby in standbys:
        standby.release()


def release_unused_claims() -> None:
    """Standbys claimed by submissions that never reached their ``up`` (once every run is torn down)."""
    with _lock:
        standbys = list(_claimed.values())
        _claimed.clear()
    for standby in standbys:
        standby.release()


def waiting() -> list[Standby]:
    """The standbys waiting for a call (tests look at them)."""
    with _lock:
        return list(_ready.values())
