"""``toolkit``: the command line. Thin: every command calls the library and formats its answer.

Toolkit errors print as one red message (they already say what to do) and
exit 1; ``--json`` prints machine-readable documents on stdout, with progress
and job logs on stderr.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from toolkit.cli.loading import load_function, parse_args, parse_assignments
from toolkit.errors import ToolkitError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__.splitlines()[0]
)
pool_app = typer.Typer(no_args_is_help=True, help="Work pools: list, show, create, import, delete, diff, export, default templates.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs of this machine: list, logs, cancel.")
toolchain_app = typer.Typer(no_args_is_help=True, help="The Pulumi engine, plugins, Docker engine and runner image.")
env_app = typer.Typer(no_args_is_help=True, help="Environments (packages built into images or virtualenvs): list, prune.")
app.add_typer(pool_app, name="pool")
app.add_typer(env_app, name="env")
app.add_typer(runs_app, name="runs")
app.add_typer(toolchain_app, name="toolchain")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON document for scripts.")]
VarOption = Annotated[list[str], typer.Option("-v", "--var", help="Job variable key=value (JSON values keep their type).")]
ArgOption = Annotated[list[str], typer.Option("--arg", help="Positional argument as JSON; repeat for more.")]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=repr) + "\n")


def _json_progress(as_json: bool) -> None:
    """With --json, progress (environment builds included) becomes JSON lines on stderr."""
    from toolkit import progress

    if as_json and progress.enabled():
        os.environ["TOOLKIT_PROGRESS"] = "json"


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 1h or 2d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


# -- toolchain and doctor -------------------------------------------------------------


@toolchain_app.command("install")
def toolchain_install(
    docker: Annotated[bool, typer.Option("--docker/--no-docker", help="Also the Docker engine, plugin and image.")] = True,
) -> None:
    """Build or install everything missing (idempotent; cached under ~/.cache/toolkit)."""
    from toolkit.toolchain.install import install

    timeline = install(lambda line: err.print(line, markup=False), docker=docker)
    err.print("\nToolchain:\n" + timeline.summary(), markup=False)


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """What is installed and running, what is missing, and the command that fixes it."""
    from toolkit.toolchain.doctor import checks, healthy

    results = checks()
    if as_json:
        _print_json([check.model_dump() for check in results])
    else:
        for check in results:
            status = "[green]OK     [/green]" if check.ok else ("[red]MISSING[/red]" if check.required else "[yellow]absent [/yellow]")
            line = f"{status} {check.component:<24} {check.detail}"
            if not check.ok and check.fix:
                line += f"\n        fix: {check.fix}"
            out.print(line)
    raise typer.Exit(0 if healthy(results) else 1)


# -- pools ----------------------------------------------------------------------------


@pool_app.command("ls")
def pool_ls(as_json: JsonOption = False) -> None:
    """List work pools (built-in and registered)."""
    from toolkit.pools import PoolRegistry

    pools = PoolRegistry().list()
    if as_json:
        _print_json([pool.model_dump(exclude={"base_job_template"}) for pool in pools])
        return
    table = Table("NAME", "TYPE", "STORAGE", "DESCRIPTION", box=None)
    for pool in pools:
        table.add_row(pool.name, pool.type, pool.storage.url or "(per run)", pool.description)
    out.print(table)


@pool_app.command("show")
def pool_show(name: str) -> None:
    """Print a pool's full document (JSON)."""
    from toolkit.pools import PoolRegistry

    sys.stdout.write(PoolRegistry().get(name).to_document() + "\n")


@pool_app.command("create")
def pool_create(
    name: str,
    type_: Annotated[str, typer.Option("--type", help="Target type: process, docker, kubernetes, ecs, ...")],
    template: Annotated[Path | None, typer.Option(help="Base job template JSON file (default: the type's).")] = None,
    storage: Annotated[str | None, typer.Option(help="fsspec URL of shared run storage (s3://bucket/prefix).")] = None,
    storage_mode: Annotated[str | None, typer.Option(help="per-run-bucket or shared-prefix (default: shared-prefix when --storage is given).")] = None,
    backend_url: Annotated[str | None, typer.Option(help="Pulumi state backend for this pool's run stacks.")] = None,
    description: str = "",
    policy_pack: Annotated[list[str], typer.Option(help="Policy pack enforced on every run: a directory or registry:NAME; repeat for more.")] = [],  # noqa: B006
    max_concurrent_runs: Annotated[int | None, typer.Option(help="Live runs the pool allows at once (all clients of its backend).")] = None,
    secrets_provider: Annotated[str | None, typer.Option(help="Run stacks' secrets provider: passphrase, awskms://..., gcpkms://..., azurekeyvault://..., hashivault://...")] = None,
    image_registry: Annotated[str | None, typer.Option(help="Registry HOST[:PORT]/PATH that environment images are pushed to for remote targets (pulled by digest).")] = None,
    registry_username: Annotated[str | None, typer.Option(help="User name for --image-registry (default: your Docker login or credential helper).")] = None,
    registry_password_env: Annotated[str | None, typer.Option(help="Name of the environment variable holding the --image-registry password or token (never stored).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing pool of that name.")] = False,
) -> None:
    """Register a work pool in the pool registry."""
    from toolkit.errors import ConfigError
    from toolkit.guardrails.policy import PUBLISHED, check_pack_directory
    from toolkit.pools import PoolRegistry, StorageConfig, WorkPool, parse_pool

    packs = []
    for pack in policy_pack:
        if not pack.startswith(PUBLISHED):
            directory = Path(pack).expanduser().absolute()
            try:
                check_pack_directory(directory)
            except ValueError as exc:
                raise ConfigError(f"--policy-pack: {exc}") from None
            pack = str(directory)
        packs.append(pack)
    document: dict[str, Any] = {"name": name, "type": type_, "description": description}
    if packs:
        document["policy_packs"] = packs
    if max_concurrent_runs is not None:
        document["max_concurrent_runs"] = max_concurrent_runs
    if secrets_provider:
        document["secrets_provider"] = secrets_provider
    if image_registry:
        document["image_registry"] = {"url": image_registry, "username": registry_username,
                                      "password_env": registry_password_env}
    elif registry_username or registry_password_env:
        raise ConfigError("--registry-username and --registry-password-env go with --image-registry HOST/PATH")
    if template is not None:
        document["base_job_template"] = json.loads(template.read_text())
    if storage:
        document["storage"] = StorageConfig(url=storage, mode=storage_mode or "shared-prefix").model_dump()
    if backend_url:
        document["backend_url"] = backend_url
    pool: WorkPool = parse_pool(json.dumps(document), source="the command line")
    registry = PoolRegistry()
    registry.save(pool, overwrite=overwrite)
    err.print(f"created pool {name!r} ({type_}) in {registry.url}")


@pool_app.command("import")
def pool_import(
    file: Annotated[Path, typer.Argument(help="A Prefect base job template or `prefect work-pool inspect -o json` output.")],
    name: Annotated[str, typer.Option(help="Name of the pool to create.")],
    type_: Annotated[str | None, typer.Option("--type", help="Prefect work pool type (default: detected).")] = None,
    storage: Annotated[str | None, typer.Option(help="fsspec URL of shared run storage (default: the pool's bundle storage).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print the report; create nothing.")] = False,
    allow_lossy: Annotated[bool, typer.Option("--allow-lossy", help="Import even if settings cannot be carried over.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing pool of that name.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a pool from a Prefect work pool's base job template, reporting what became of each variable."""
    from toolkit.pools import PoolRegistry
    from toolkit.prefect.pool_import import LossyImportError, import_pool

    try:
        pool, report = import_pool(
            file.read_text(), name, str(file), prefect_type=type_, storage=storage, allow_lossy=allow_lossy or dry_run
        )
    except LossyImportError as exc:
        _print_import_report(exc.report, as_json)
        raise
    _print_import_report(report, as_json)
    if dry_run:
        err.print(f"dry run: pool {name!r} ({pool.type}) not created", markup=False)
        return
    registry = PoolRegistry()
    registry.save(pool, overwrite=overwrite)
    err.print(f"created pool {name!r} ({pool.type}) in {registry.url}", markup=False)


def _print_import_report(report: Any, as_json: bool) -> None:
    if as_json:
        _print_json({**report.model_dump(), "lost": report.lost})
        return
    versions = ", ".join(f"{k} {v}" for k, v in report.reference.items() if k != "worker")
    out.print(f"Prefect {report.prefect_type} template -> {report.target} pool (compared with {versions})", markup=False)
    for row in report.variables:
        what = f"{row.name} -> {row.ours}" if row.outcome in ("renamed", "combined") else row.name
        default = "" if row.default is None else f" = {row.default!r}"
        note = f"  ({row.note})" if row.note else ""
        outcome = f"{row.outcome}, LOST" if row.lost else row.outcome
        out.print(f"  {outcome:<20} {what}{default}{note}", markup=False)
    for setting in report.settings:
        outcome = f"{setting.outcome}, LOST" if setting.lost else setting.outcome
        out.print(f"  {outcome:<20} job_configuration: {setting.op} {setting.path}  ({setting.note})", markup=False)
    if report.storage:
        out.print(f"storage: {report.storage}", markup=False)
    lost = report.lost
    out.print(f"{len(lost)} setting(s) cannot be carried over" + (f": {', '.join(lost)}" if lost else ""), markup=False)


@pool_app.command("delete")
def pool_delete(name: str) -> None:
    """Remove a work pool from the registry."""
    from toolkit.pools import PoolRegistry

    PoolRegistry().delete(name)
    err.print(f"deleted pool {name!r}")


@pool_app.command("diff")
def pool_diff(
    name: str,
    template: Annotated[Path, typer.Option(help="The new base job template (JSON file).")],
    as_json: JsonOption = False,
) -> None:
    """Preview replacing a pool's base job template: the fields that would change. Writes nothing."""
    from dataclasses import asdict

    from toolkit.pool_diff import preview_template_change
    from toolkit.pools import PoolRegistry

    registry = PoolRegistry()
    _, changes = preview_template_change(registry, name, template)
    if as_json:
        _print_json([asdict(change) for change in changes])
        return
    out.print(f"pool {name!r} in {registry.url}: {len(changes) or 'no'} field change(s)", markup=False)
    for change in changes:
        out.print(f"  {change}", markup=False)


@pool_app.command("export")
def pool_export(
    out_dir: Annotated[Path, typer.Option("--out", help="Program directory to write into.")] = Path("stacks"),
    force: Annotated[bool, typer.Option(help="Overwrite an earlier export.")] = False,
) -> None:
    """Write the registry's pools as a pools-as-code program (WorkPoolResource declarations)."""
    from toolkit.pool_export import MAIN, MODULE, export_program
    from toolkit.pools import PoolRegistry

    written = export_program(PoolRegistry(), out_dir, force=force)
    for path in written:
        err.print(f"wrote {path}", markup=False)
    if out_dir / MAIN not in written:
        err.print(f"{out_dir / MAIN} exists: add `import {MODULE.removesuffix('.py')}` to it", markup=False)
    err.print(f"next: `pulumi preview` in the project whose Pulumi.yaml has `main: {out_dir}/`", markup=False)


@pool_app.command("default-template")
def pool_default_template(type_: Annotated[str, typer.Argument(metavar="TYPE")]) -> None:
    """Print a target type's base job template (JSON), a starting point for --template."""
    from toolkit.infra import get_target_class

    _print_json(get_target_class(type_).default_template())


# -- preview and run --------------------------------------------------------------------


def _bind(spec: str, pool: str | None, variables: dict[str, Any]) -> Any:
    """An InfraFunction for FILE.py:FUNC on ``pool`` with ``variables`` on top."""
    from toolkit.decorators import InfraFunction
    from toolkit.errors import ConfigError
    from toolkit.infra import get_target_class
    from toolkit.pools import PoolRegistry

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


@app.command()
def preview(
    spec: Annotated[str, typer.Argument(metavar="FILE.py:FUNC")],
    pool: Annotated[str | None, typer.Option(help="Work pool (default: the decorator's).")] = None,
    var: VarOption = [],  # noqa: B006 - typer reads the default
    arg: ArgOption = [],  # noqa: B006
    as_json: JsonOption = False,
) -> None:
    """Show the infrastructure a call would create, and whether its environment is cached; creates nothing."""
    _json_progress(as_json)
    plan = _bind(spec, pool, parse_assignments(var)).preview(*parse_args(arg))
    if as_json:
        sys.stdout.write(plan.to_json() + "\n")
    else:
        out.print(str(plan), markup=False)
    if not plan.allowed:
        err.print("[red]a mandatory policy would stop this call[/red]")
        raise typer.Exit(1)


@app.command()
def run(
    spec: Annotated[str, typer.Argument(metavar="FILE.py:FUNC")],
    pool: Annotated[str | None, typer.Option(help="Work pool (default: the decorator's).")] = None,
    var: VarOption = [],  # noqa: B006
    arg: ArgOption = [],  # noqa: B006
    block: Annotated[bool, typer.Option("--block/--no-block", help="Wait for a slot when the pool is at its concurrency limit, or fail at once.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Run FUNC on its pool and print the result."""
    _json_progress(as_json)
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
                _print_json({"run_id": future.run_id, "state": future.state, "error": repr(exc),
                             "traceback": getattr(exc, "remote_traceback", "")})
            else:
                err.print(getattr(exc, "remote_traceback", "") or repr(exc), markup=False)
            raise typer.Exit(1) from None
    if as_json:
        _print_json({"run_id": future.run_id, "state": future.state, "result": value})
    else:
        out.print(repr(value), markup=False)


# -- environments -------------------------------------------------------------------------


def _when(moment: float | None) -> str:
    return datetime.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M") if moment else "-"


@env_app.command("ls")
def env_ls(as_json: JsonOption = False) -> None:
    """Environments (stack env-HASH, image toolkit-env:HASH or a virtualenv): packages, size, last use."""
    from toolkit.environments.manage import list_environments
    from toolkit.environments.summary import human_size

    found = list_environments()
    if as_json:
        _print_json([info.model_dump() for info in found])
        return
    if not found:
        err.print("no environments")
        return
    table = Table("ENVIRONMENT", "KIND", "PACKAGES", "SIZE", "LAST USED", "PRESENT", box=None)
    for info in found:
        names = [package.split("==")[0] for package in info.packages]
        packages = f"{len(names)}: " + ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        table.add_row(info.hash or info.stack, info.kind or "?", packages,
                      human_size(info.size) if info.size is not None else "-",
                      _when(info.last_used or info.created), "yes" if info.present else "no")
    out.print(table)


@env_app.command("prune")
def env_prune(
    older_than: Annotated[str | None, typer.Option(help="Only environments unused for this long (7d, 12h).")] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be destroyed, destroy nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Destroy environment stacks, their images (pushed ones too) or virtualenvs (all, or those unused for --older-than)."""
    from toolkit.environments.manage import prune

    results = prune(_duration(older_than) if older_than else None, dry_run=dry_run)
    if as_json:
        _print_json([result.model_dump() for result in results])
    elif not results:
        err.print("nothing to prune")
    for result in results if not as_json else []:
        verb = "would destroy" if dry_run else ("destroyed" if result.destroyed else f"FAILED ({result.error})")
        info = result.environment
        out.print(f"{verb} {info.stack} ({info.reference}, last used {_when(info.last_used or info.created)})",
                  markup=False)
        if result.left_in_registry:
            err.print(f"  warning: {result.left_in_registry}", markup=False)
    if any(result.error for result in results):
        raise typer.Exit(1)


# -- runs and gc --------------------------------------------------------------------------


def _runs_ls_all(as_json: bool) -> None:
    """Live run stacks and the audit trail of every known backend (all clients of them)."""
    import datetime

    from toolkit.guardrails.audit import audit_rows

    rows = audit_rows()
    if as_json:
        _print_json([row.model_dump() for row in rows])
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
        _print_json([record.model_dump() for record in found])
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

    from toolkit import gc, records

    record = records.load(run_id)
    if record.torn_down:
        err.print(f"run {run_id} is already {record.state} and torn down")
        return
    if gc.owner_alive(record.owner):
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


@app.command("gc")
def gc_command(
    older_than: Annotated[str | None, typer.Option(help="Only stacks older than this (30m, 1h, 2d).")] = None,
    history_older_than: Annotated[str, typer.Option(help="Drop audit-trail entries of runs that finished longer ago.")] = "30d",
    dry_run: Annotated[bool, typer.Option(help="List what would be destroyed, destroy nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Destroy leaked run stacks (owner gone or TTL passed); live owners' stacks are never touched.

    Also prunes the audit trail (runs ls --all) and dead runs' slot markers in each backend.
    """
    from dataclasses import asdict

    from toolkit import gc

    leaks = gc.collect(_duration(older_than) if older_than else None, dry_run=dry_run)
    pruned = [] if dry_run else gc.prune_records(_duration(history_older_than))
    if as_json:
        _print_json([asdict(leak) for leak in leaks])
    elif not leaks:
        err.print("no leaked run stacks")
    for entry in pruned if not as_json else []:
        if entry.error:
            err.print(f"could not prune {entry.backend_url}: {entry.error}", markup=False)
        elif entry.history_entries or entry.slot_markers:
            err.print(f"pruned {entry.history_entries} audit entries and {entry.slot_markers} slot markers "
                      f"in {entry.backend_url}", markup=False)
    for leak in leaks if not as_json else []:
        verb = "would destroy" if dry_run else ("destroyed" if leak.destroyed else f"FAILED ({leak.error})")
        out.print(f"{verb} {leak.stack} in {leak.backend_url}: {leak.reason}", markup=False)
    if any(leak.error for leak in leaks):
        raise typer.Exit(1)


def main() -> None:
    """Entry point: toolkit errors become one clear message and exit status 1."""
    from rich.text import Text

    try:
        app()
    except ToolkitError as exc:
        err.print(Text("error: ", style="red") + Text(str(exc)))
        sys.exit(1)
