"""``toolkit pool ...``: list, show, create, import, delete, diff and export work pools."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from toolkit.cli.output import JsonOption, err, out, print_json
from toolkit.infra.registry import target_names

pool_app = typer.Typer(no_args_is_help=True, help="Work pools: list, show, create, import, delete, diff, export, default templates.")


@pool_app.command("ls")
def pool_ls(as_json: JsonOption = False) -> None:
    """List work pools (built-in and registered)."""
    from toolkit.pools.registry import PoolRegistry

    pools = PoolRegistry().list()
    if as_json:
        print_json([pool.model_dump(exclude={"base_job_template"}) for pool in pools])
        return
    table = Table("NAME", "TYPE", "STORAGE", "DESCRIPTION", box=None)
    for pool in pools:
        table.add_row(pool.name, pool.type, pool.storage.url or "(per run)", pool.description)
    out.print(table)


@pool_app.command("show")
def pool_show(name: str) -> None:
    """Print a pool's full document (JSON)."""
    from toolkit.pools.registry import PoolRegistry

    sys.stdout.write(PoolRegistry().get(name).to_document() + "\n")


@pool_app.command("create")
def pool_create(
    name: str,
    type_: Annotated[str, typer.Option("--type", help=f"Target type: {', '.join(target_names())}.")],
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
    from toolkit.policy_packs import PUBLISHED, check_pack_directory
    from toolkit.pools.registry import PoolRegistry, StorageConfig, WorkPool, parse_pool

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
    file: Annotated[Path, typer.Argument(help="A Prefect base job template, or the output of: prefect work-pool inspect NAME -o json.")],
    name: Annotated[str, typer.Option(help="Name of the pool to create.")],
    type_: Annotated[str | None, typer.Option("--type", help="Prefect work pool type (default: detected).")] = None,
    storage: Annotated[str | None, typer.Option(help="fsspec URL of shared run storage (default: the pool's bundle storage).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print the report; create nothing.")] = False,
    allow_lossy: Annotated[bool, typer.Option("--allow-lossy", help="Import even if settings cannot be carried over.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing pool of that name.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a pool from a Prefect work pool's base job template, reporting what became of each variable."""
    from toolkit.pools.registry import PoolRegistry
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
        print_json({**report.model_dump(), "lost": report.lost})
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
    from toolkit.pools.registry import PoolRegistry

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

    from toolkit.pools.diff import preview_template_change
    from toolkit.pools.registry import PoolRegistry

    registry = PoolRegistry()
    _, changes = preview_template_change(registry, name, template)
    if as_json:
        print_json([asdict(change) for change in changes])
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
    from toolkit.pools.export import MAIN, MODULE, export_program
    from toolkit.pools.registry import PoolRegistry

    written = export_program(PoolRegistry(), out_dir, force=force)
    for path in written:
        err.print(f"wrote {path}", markup=False)
    if out_dir / MAIN not in written:
        err.print(f"{out_dir / MAIN} exists: add `import {MODULE.removesuffix('.py')}` to it", markup=False)
    err.print(f"next: `pulumi preview` in the project whose Pulumi.yaml has `main: {out_dir}/`", markup=False)


@pool_app.command("default-template")
def pool_default_template(
    type_: Annotated[str, typer.Argument(metavar="TYPE", help=f"One of: {', '.join(target_names())}.")],
) -> None:
    """Print a target type's base job template (JSON), a starting point for --template."""
    from toolkit.infra.registry import get_target_class

    print_json(get_target_class(type_).default_template())
