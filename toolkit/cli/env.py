"""``toolkit env ...``: the environments built for calls (images or virtualenvs) and their stacks."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli.output import JsonOption, duration, err, out, print_json

env_app = typer.Typer(no_args_is_help=True, help="Environments (packages built into images or virtualenvs): list, prune.")


def _when(moment: float | None) -> str:
    return datetime.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M") if moment else "-"


@env_app.command("ls")
def env_ls(as_json: JsonOption = False) -> None:
    """Environments (stack env-HASH, image toolkit-env:HASH or a virtualenv): packages, size, last use."""
    from toolkit.environments.manage import list_environments
    from toolkit.environments.summary import human_size

    found = list_environments()
    if as_json:
        print_json([info.model_dump() for info in found])
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

    results = prune(duration(older_than) if older_than else None, dry_run=dry_run)
    if as_json:
        print_json([result.model_dump() for result in results])
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
