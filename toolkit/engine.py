"""Ephemeral run stacks through the Pulumi Automation API, with only the CLI work a run needs.

One stack per call: ``run-<id>`` in project ``toolkit-runs``, tagged with the
pool, function, owner (host, pid, process start time), creation time and TTL so
``toolkit gc`` can find and destroy stacks whose owner died. Each stack gets
its own workspace directory, removed with the stack, so concurrent runs never
share files and nothing is left on disk.

Where the time goes, and why this module looks the way it does: every CLI
process costs the engine's start, the backend's and the passphrase key's
derivation. A run on a local backend starts two (``up``, ``destroy --remove``),
through ``operations.OperationStack``; ``diy_backend`` creates and tags the
stack without one. All run stacks share one ``PulumiCommand`` (it runs
``pulumi version`` when built).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pulumi import automation as auto
from pydantic import BaseModel

from toolkit import diy_backend, settings
from toolkit.errors import ProvisionError, TeardownError
from toolkit.operations import STACK_TYPE, OnEvent, OperationResult, OperationStack, is_secret
from toolkit.plan import ResourceChange
from toolkit.policy_packs import violation_error
from toolkit.progress import Progress
from toolkit.toolchain import stack_key
from toolkit.workspace import ensure_local_backend, list_stacks, remove_stack, workspace_options

RUN_TAG = "toolkit:run"
"""One stack tag holding ``RunTag`` as JSON: one CLI call to set, instead of one per field."""


class RunTag(BaseModel):
    """What ``toolkit gc`` needs to know about a run stack without its client."""

    pool: str
    function: str
    owner: str
    """``host:pid:process-start-time`` of the client that owns the stack."""
    created: float
    ttl: float
    """Seconds after ``created`` when gc may collect the stack even if its owner seems alive."""

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RunTag | None:
        try:
            return cls.model_validate_json(tags[RUN_TAG])
        except (KeyError, ValueError):
            return None


def stack_name(run_id: str) -> str:
    return f"run-{run_id}"


class RunStack:
    """One run's stack: create, up, preview, destroy, remove -- each with the fewest CLI processes.

    Per run that is ``pulumi up`` and ``pulumi destroy --remove`` and nothing else
    when the backend is a local directory (``diy_backend`` creates the stack and
    its gc tag as files); elsewhere ``stack init`` comes first, the tag is set
    while ``up`` runs and the stack is removed by ``stack rm --remove-backups``.
    """

    def __init__(
        self,
        run_id: str,
        backend_url: str,
        program: Callable[[], None],
        progress: Progress,
        tag: RunTag | None = None,
        secrets_provider: str | None = None,
        policy_packs: Sequence[str] = (),
        create: bool = True,
    ) -> None:
        self.run_id = run_id
        self.name = stack_name(run_id)
        self.backend_url = backend_url
        self.progress = progress
        self.policy_packs = list(policy_packs)
        """Policy pack directories the engine runs at every preview and up of this stack."""
        ensure_local_backend(backend_url)
        self._work_dir = Path(tempfile.mkdtemp(prefix=f"toolkit-{run_id}-"))
        provider = secrets_provider or settings.secrets_provider()
        if provider == settings.PASSPHRASE and stack_key.enabled():
            provider = stack_key.URL  # the same passphrase, derived once per client instead of per CLI process
        try:
            options = workspace_options(backend_url, self._work_dir, secrets_provider=provider, program=program)
            self._workspace = auto.LocalWorkspace(**vars(options))  # writes Pulumi.yaml; no CLI call
            self.stack = OperationStack(self.name, self._workspace)
            # The first `up` of a stack created as files gives it the secrets provider its stack settings name.
            self._direct = diy_backend.writable_layout(backend_url, {**os.environ, **options.env_vars}) and (
                options.secrets_provider in (settings.PASSPHRASE, stack_key.URL)
            )
            self._pending_tag = tag
            if create:
                self._create()
        except BaseException:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            raise

    @property
    def made_of_files(self) -> bool:
        """True when this stack is created, tagged and removed as backend files (``diy_backend``), not by the CLI."""
        return self._direct

    @classmethod
    def existing(cls, name: str, backend_url: str, progress: Progress | None = None) -> RunStack:
        """A run stack some client created (gc, cancel from another process); nothing is created."""
        run_id = name.removeprefix("run-")
        return cls(run_id, backend_url, lambda: None, progress or Progress(run_id, show=False), create=False)

    @property
    def work_dir(self) -> Path:
        """This process's Pulumi workspace directory for the stack (``toolkit-<run id>-*`` in the temporary
        directory): where its CLI processes, and the plugins they start, run."""
        return self._work_dir

    def _create(self) -> None:
        tag = self._pending_tag
        if self._direct:
            tags = {RUN_TAG: tag.model_dump_json()} if tag else {}
            try:
                diy_backend.create_stack(self.backend_url, settings.RUN_PROJECT, self.name, tags)
            except OSError as exc:
                raise ProvisionError(f"could not create stack {self.name} in {self.backend_url}: {exc}") from None
            self._pending_tag = None
            if self._workspace.secrets_provider == stack_key.URL:
                (self._work_dir / f"Pulumi.{self.name}.yaml").write_text(f"secretsprovider: {stack_key.URL}\n")
        else:
            self._workspace.create_stack(self.name)  # `stack init`; the tag is set while `up` runs

    def up(self) -> dict[str, Any]:
        """``pulumi up``; returns the stack's outputs (plain values) from the engine's events.

        A tag still to be written (backends the CLI must create stacks in) is set
        while ``up`` runs: the two CLI calls overlap instead of queueing. The tag
        call can read the checkpoint while ``up`` rewrites it ("failed to load
        checkpoint: EOF"), so a failed one is made again once ``up`` is done. Raises
        ``ProvisionError`` with the engine's own error diagnostics.
        """
        tag_errors: list[Exception] = []
        tagger = None
        tag_value = self._pending_tag.model_dump_json() if self._pending_tag is not None else None
        if tag_value is not None:

            def tag() -> None:
                try:
                    self.stack.set_tag(RUN_TAG, tag_value)
                except auto.errors.CommandError as exc:
                    tag_errors.append(exc)

            tagger = threading.Thread(target=tag, name=f"tag-{self.name}")
            tagger.start()
        self.progress.errors.clear()
        try:
            outputs = self._operate("up", self.progress.on_event).outputs
        except auto.errors.CommandError as exc:
            self._raise_policy_violation()
            raise ProvisionError(f"provisioning run {self.run_id} failed: {self._error_detail(exc)}") from None
        finally:
            if tagger is not None:
                tagger.join()
        if tag_errors and tag_value is not None:
            try:
                self.stack.set_tag(RUN_TAG, tag_value)
            except auto.errors.CommandError as exc:
                raise ProvisionError(f"tagging stack {self.name} for `toolkit gc` failed: {exc}") from None
        secret = sorted(key for key, value in outputs.items() if is_secret(value))
        if secret:
            raise ProvisionError(
                f"the program of run {self.run_id} exports {', '.join(secret)} as secrets; the client reads "
                "exports from the engine's events, which never carry a secret's value. Export plain values"
            )
        return outputs

    def preview(self) -> list[ResourceChange]:
        """``pulumi preview``: the steps it would take, from structured events."""
        changes: list[ResourceChange] = []

        def collect(event: auto.EngineEvent) -> None:
            self.progress.on_event(event)
            pre = event.resource_pre_event
            if pre and pre.metadata.type != STACK_TYPE:
                meta = pre.metadata
                inputs = dict(meta.new.inputs) if meta.new and meta.new.inputs else {}
                changes.append(ResourceChange.from_event(meta.op.value, meta.type, meta.urn, inputs))

        self.progress.errors.clear()
        try:
            self._operate("preview", collect)
        except auto.errors.CommandError as exc:
            self._raise_policy_violation(changes or [])
            raise ProvisionError(f"preview of run {self.run_id} failed: {self._error_detail(exc)}") from None
        return changes

    def _raise_policy_violation(self, changes: list[ResourceChange] | None = None) -> None:
        """A failed preview/up that mandatory policies caused becomes the error naming them."""
        if any(result.mandatory for result in self.progress.policy_results):
            during_up = changes is None
            raise violation_error(self.progress.policy_results, self.run_id, changes, during_up) from None

    def destroy_once(self) -> dict[str, int]:
        """Destroy and remove the stack: one ``pulumi destroy --remove`` (raises the CLI's error).

        Returns the engine's step counts (``{"delete": n}``, the stack resource included).
        """
        changes = self._operate("destroy", self.progress.on_event).changes
        if not self._direct:  # `--remove` would keep the checkpoint's backup in the bucket; `stack rm` can drop it
            remove_stack(self.name, self.backend_url, self._work_dir)
        # Either way the CLI leaves the stack's empty history and lock directories in a local backend.
        diy_backend.remove_leftovers(self.backend_url, settings.RUN_PROJECT, self.name)
        return changes

    def destroy_and_remove(self, attempts: int = 5) -> None:
        """Destroy and remove the stack; retries a stack still locked by a finishing update."""
        last: Exception | None = None
        try:
            for attempt in range(attempts):
                try:
                    self.destroy_once()
                    return
                except auto.errors.StackNotFoundError:  # removed already (by an earlier attempt, or gc)
                    diy_backend.remove_leftovers(self.backend_url, settings.RUN_PROJECT, self.name)
                    return
                except auto.errors.CommandError as exc:
                    last = exc
                    if corrupted_state(exc):
                        break  # retrying cannot repair a file
                    time.sleep(min(0.5 * 2**attempt, 5.0))
        finally:
            self.close()
        assert last is not None
        raise TeardownError(describe_failure(last, self.name, self.backend_url) + " `toolkit gc` will retry it")

    def remove_unprovisioned(self) -> None:
        """Remove a stack that never ran ``up`` (previews)."""
        try:
            if self._direct:
                diy_backend.remove_unused_stack(self.backend_url, settings.RUN_PROJECT, self.name)
            else:
                remove_stack(self.name, self.backend_url, self._work_dir)
        finally:
            self.close()

    def _operate(self, command: str, on_event: OnEvent) -> OperationResult:
        """The one place a run stack's operations run: ``up``, ``preview`` or ``destroy``, with their flags."""
        policy = [flag for pack in self.policy_packs for flag in ("--policy-pack", pack)]
        flags = {
            "up": ["--yes", "--skip-preview", *policy],
            "preview": policy,
            "destroy": ["--yes", "--skip-preview", *(["--remove"] if self._direct else [])],
        }[command]
        return self.stack.operate([command, *flags], on_event)

    def close(self) -> None:
        """Remove the stack's workspace directory (its config file included)."""
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def _error_detail(self, error: Exception) -> str:
        return "; ".join(self.progress.errors) or str(error).strip().splitlines()[-1]


def checkpoint_location(stack: str, backend_url: str) -> str:
    """Where a DIY backend keeps a stack's state file (a path for file://, else a URL)."""
    location = f"{backend_url.rstrip('/')}/.pulumi/stacks/{settings.RUN_PROJECT}/{stack}.json"
    return location.removeprefix("file://")


def corrupted_state(error: Exception) -> bool:
    return "load checkpoint" in str(error)


def describe_failure(error: Exception, stack: str, backend_url: str) -> str:
    """A one-paragraph account of a failed CLI operation on a run stack."""
    text = str(error).strip()
    detail = text.rsplit("stderr:", 1)[-1].strip().removeprefix("error:").strip() or text[-400:]
    if corrupted_state(error):
        return (
            f"the state file {checkpoint_location(stack, backend_url)} of stack {stack} is corrupted ({detail}). "
            "Restore it from a backup, or delete it and remove the run's resources by hand."
        )
    return f"could not destroy stack {stack} in {backend_url}: {detail[-400:]}."


@contextmanager
def selected_stack(name: str, backend_url: str) -> Iterator[auto.Stack]:
    """An existing run stack, for gc and cancel from another process (program-less)."""
    work_dir = Path(tempfile.mkdtemp(prefix="toolkit-gc-"))
    try:
        yield auto.select_stack(
            name,
            project_name=settings.RUN_PROJECT,
            program=lambda: None,
            opts=workspace_options(backend_url, work_dir),
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def list_run_stacks(backend_url: str) -> list[tuple[str, dict[str, str]]]:
    """Every run stack in ``backend_url`` with its tags."""
    return list_stacks(backend_url, settings.RUN_PROJECT)
