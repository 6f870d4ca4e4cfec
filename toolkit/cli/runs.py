"""``toolkit preview``, ``toolkit run`` and ``toolkit runs ...``: calls from the command line and their runs."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from toolkit.cli.loading import load_function, parse_args, parse_assignments
from toolkit.cli.output import JsonOption, err, json_progress, out, print_json
from toolkit.errors import ToolkitError

runs_app = typer.Typer(no_args_is_help=True, help="Runs of this machine: list, logs, cancel.")

VarOption = Annotated[list[str], typer.Option("-v", "--var", help="Job variable key=value (JSON values keep their type).")]
ArgOption = Annotated[list[str], typer.Option("--arg", help="Positional argument as JSON; repeat for more.")]


def _bind(spec: str, pool: str | None, variables: dict[str, Any]) -> Any:
    """An InfraFunction for FILE.py:FUNC on ``pool`` with ``variables`` on top."""
    from toolkit.decorators import InfraFunction
    from toolkit.errors import ConfigError
    from toolkit.infra.registry import get_target_class
    from toolkit.pools.registry import PoolRegistry

    fn = load_function(spec)
    if isinstance(fn, InfraFunction):
        if pool and PoolRegistry().get(pool).type != fn.target_type:
            fn = InfraFunction(fn.fn, PoolRegistry().get(pool).type, pool, fn.layers)
        return fn.with_options(pool=pool, **variables)
    if not pool:
        raise ConfigError(f"{spec} is not decorated with a target; pass --pool NAME (`toolkit pool ls`)")
    target_type = PoolRegistry().get(pool).type
    get_target_class(target_type)
    return InfraFunction(fn, target_type, pool, [variables])


def preview(
    spec: Annotated[str, typer.Argument(metavar="FILE.py:FUNC")],
    pool: Annotated[str | None, typer.Option(help="Work pool (default: the decorator's).")] = None,
    var: VarOption = [],  # noqa: B006 - typer reads the default
    arg: ArgOption = [],  # noqa: B006
    as_json: JsonOption = False,
) -> None:
    """Show the infrastructure a call would create, and whether its environment is cached; creates nothing."""
    json_progress(as_json)
    plan = _bind(spec, pool, parse_assignments(var)).preview(*parse_args(arg))
    if as_json:
        sys.stdout.write(plan.to_json() + "\n")
    else:
        out.print(str(plan), markup=False)
    if not plan.allowed:
        err.print("[red]a mandatory policy would stop this call[/red]")
        raise typer.Exit(1)


def run(
    spec: Annotated[str, typer.Argument(metavar="FILE.py:FUNC")],
    pool: Annotated[str | None, typer.Option(help="Work pool (default: the decorator's).")] = None,
    var: VarOption = [],  # noqa: B006
    arg: ArgOption = [],  # noqa: B006
    block: Annotated[bool, typer.Option("--block/--no-block", help="Wait for a slot when the pool is at its concurrency limit, or fail at once.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Run FUNC on its pool and print the result."""
    json_progress(as_json)
    bound = _bind(spec, pool, parse_assignments(var)).with_options(block=block)
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with redirect:
        future = bound.submit(*parse_args(arg))
        try:
            value = future.result()
        except ToolkitError:
            raise
        except Exception as exc:  # the function's own exception, re-raised from the job
            if as_json:
                print_json({"run_id": future.run_id, "state": future.state, "error": repr(exc),
                             "traceback": getattr(exc, "remote_traceback", "")})
            else:
                err.print(getattr(exc, "remote_traceback", "") or repr(exc), markup=False)
            raise typer.Exit(1) from None
    if as_json:
        print_json({"run_id": future.run_id, "state": future.state, "result": value})
    else:
        out.print(repr(value), markup=False)


def _runs_ls_all(as_json: bool) -> None:
    """Live run stacks and the audit trail of every known backend (all clients of them)."""
    import datetime

    from toolkit import gc
    from toolkit.guardrails.audit import audit_rows

    rows = audit_rows(gc.backend_urls())
    if as_json:
        print_json([row.model_dump() for row in rows])
        return
    table = Table("RUN", "WHO", "POOL", "FUNCTION", "RESOURCES", "OUTCOME", "STARTED", "DURATION", box=None)
    for row in rows:
        started = datetime.datetime.fromtimestamp(row.created).strftime("%Y-%m-%d %H:%M:%S")
        resources = "-" if row.resources is None else str(row.resources)
        duration = "-" if row.duration is None else f"{row.duration:.1f}s"
        outcome = row.outcome + (f" ({row.attempts} attempts)" if row.attempts > 1 else "")
        table.add_row(row.run_id, row.user, row.pool, row.function, resources, outcome, started, duration)
    out.print(table)


@runs_app.command("ls")
def runs_ls(
    all_runs: Annotated[bool, typer.Option("--all", help="Every client's runs: live stacks and the backends' audit trail.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Runs started from this machine, oldest first (--all: everyone's, from the backends)."""
    import datetime

    from toolkit import records

    if all_runs:
        _runs_ls_all(as_json)
        return
    found = records.all_records()
    if as_json:
        print_json([record.model_dump() for record in found])
        return
    table = Table("RUN", "FUNCTION", "POOL", "STATE", "CREATED", "TORN DOWN", box=None)
    for record in found:
        created = datetime.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        state = record.state + (f" ({record.attempts} attempts)" if record.attempts > 1 else "")
        table.add_row(record.run_id, record.function, record.pool, state, created, "yes" if record.torn_down else "no")
    out.print(table)


@runs_app.command("logs")
def runs_logs(run_id: str) -> None:
    """Print a run's job output (kept after its stack is gone)."""
    from toolkit import records

    sys.stdout.write(records.load(run_id).logs())


@runs_app.command("cancel")
def runs_cancel(
    run_id: str,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the teardown.")] = 300.0,
) -> None:
    """Cancel a run: its owner tears it down, or gc does if the owner is gone."""
    import time

    from toolkit import gc, records, workspace

    record = records.load(run_id)
    if record.torn_down:
        err.print(f"run {run_id} is already {record.state} and torn down")
        return
    if workspace.owner_alive(record.owner):
        record.request_cancel()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not records.load(run_id).torn_down:
            time.sleep(0.5)
        final = records.load(run_id)
        if not final.torn_down:
            raise ToolkitError(f"run {run_id} was asked to cancel but is not torn down after {wait:g}s; retry or run `toolkit gc`")
        err.print(f"run {run_id}: {final.state}, stack destroyed")
        return
    gc.destroy_stack(record.stack, record.backend_url)
    err.print(f"run {run_id}: its owner was gone; stack {record.stack} destroyed")
