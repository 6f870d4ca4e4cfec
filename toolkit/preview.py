"""Preview: steps 1-4 of a submission with ``pulumi preview`` instead of ``up``.

Nothing is created: the stack exists only for the preview and is removed with
its workspace directory and the staged bundle, whatever happens. The pool's
policy packs run as they would at ``up``; a mandatory violation does not
raise here: the plan lists it (``plan.allowed`` is False), which is what a
preview is for.
"""

from __future__ import annotations

from toolkit.engine import RunStack
from toolkit.errors import PolicyViolationError
from toolkit.plan import Plan
from toolkit.preparation import PreparedRun
from toolkit.progress import Progress


def preview_run(prepared: PreparedRun) -> Plan:
    """The structured plan for ``prepared``; leaves no stack, directory or process behind."""
    progress = Progress(prepared.run_id, show=False, policy_warnings=False)
    try:
        stack = RunStack(
            prepared.run_id,
            prepared.backend_url,
            program=lambda: prepared.target.program(prepared.context),
            progress=progress,
            secrets_provider=prepared.secrets_provider,
            policy_packs=prepared.policy_packs,
        )
        try:
            changes = stack.preview()
        except PolicyViolationError as exc:
            changes = exc.changes
        finally:
            stack.remove_unprovisioned()
    finally:
        prepared.discard_bundle()
    plan = _plan(prepared, changes=changes, policy_results=progress.policy_results)
    if prepared.context.fanout:
        plan.items, plan.parallelism = prepared.context.fanout.count, prepared.context.fanout.parallelism
        plan.map_form = prepared.target.map_form
    return plan


def nothing_to_create(prepared: PreparedRun) -> Plan:
    """The plan of a map over no items: its job, and no resource at all (no stack is even made)."""
    prepared.discard_bundle()
    plan = _plan(prepared)
    plan.items = plan.parallelism = 0
    return plan


def _plan(prepared: PreparedRun, **fields: object) -> Plan:
    return Plan(
        run_id=prepared.run_id,
        pool=prepared.pool.name,
        target=prepared.target.name,
        function=prepared.function_name,
        job=prepared.masked_job(),
        plugins=prepared.plugins,
        environment=prepared.environment.summary() if prepared.environment else None,
        policy_packs=prepared.policy_packs,
        **fields,
    )
