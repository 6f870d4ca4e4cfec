"""Preview: steps 1-4 of a submission with ``pulumi preview`` instead of ``up``.

Nothing is created: the stack exists only for the preview and is removed with
its workspace directory and the staged bundle, whatever happens.
"""

from __future__ import annotations

from toolkit.engine import RunStack
from toolkit.plan import Plan
from toolkit.progress import Progress
from toolkit.submission import PreparedRun


def preview_run(prepared: PreparedRun) -> Plan:
    """The structured plan for ``prepared``; leaves no stack, directory or process behind."""
    try:
        stack = RunStack(
            prepared.run_id,
            prepared.backend_url,
            program=lambda: prepared.target.program(prepared.context),
            progress=Progress(prepared.run_id, show=False),
        )
        try:
            changes = stack.preview()
        finally:
            stack.remove_unprovisioned()
    finally:
        prepared.discard_bundle()
    return Plan(
        run_id=prepared.run_id,
        pool=prepared.pool.name,
        target=prepared.target.name,
        function=prepared.function_name,
        job=prepared.masked_job(),
        plugins=prepared.plugins,
        changes=changes,
    )
