"""``toolkit gc``: destroy leaked run stacks and prune what the backends keep."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli.output import JsonOption, duration, err, out, print_json

if TYPE_CHECKING:  # imported when the command runs: it loads the engine
    from toolkit.gc import Collected, Pruned


def gc_command(
    older_than: Annotated[str | None, typer.Option(help="Only stacks older than this (30m, 1h, 2d).")] = None,
    history_older_than: Annotated[str, typer.Option(help="Drop audit-trail entries of runs that finished longer ago.")] = "30d",
    dry_run: Annotated[bool, typer.Option(help="List what would be destroyed, destroy nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Destroy leaked run stacks (owner gone or TTL passed); live owners' stacks are never touched.

    Also removes the jobs of dead clients' runs that no stack held (a container made while its client was
    killed), found by their run's label, and prunes the audit trail (runs ls --all) and dead runs' slot
    markers in each backend.

    A backend that cannot be read (no credentials for it here, say) is named with its error and the others
    are collected all the same; the exit status is then 1, as it is when a stack could not be destroyed or
    a Docker engine could not be asked for stray jobs. With --json: {"leaks": [...], "unreadable":
    [{"backend_url", "error"}], "stray_jobs": [{"run_id", "target", "names", "removed"}], "unsearched": [...]}.
    """
    from dataclasses import asdict

    from toolkit import gc

    found = gc.collect(duration(older_than) if older_than else None, dry_run=dry_run)
    pruned = [] if dry_run else gc.prune_records(duration(history_older_than))
    if as_json:
        print_json(asdict(found))
    else:
        _print(found, pruned, dry_run)
    if found.unreadable or found.unsearched or any(leak.error for leak in found.leaks):
        raise typer.Exit(1)


def _print(found: Collected, pruned: list[Pruned], dry_run: bool) -> None:
    if not found.leaks:
        err.print("no leaked run stacks" + (" in the backends it could read" if found.unreadable else ""))
    for backend in found.unreadable:
        err.print(f"could not read {backend.backend_url}: {backend.error}", markup=False)
    for target in found.unsearched:
        err.print(f"could not look for stray jobs of dead runs on {target}", markup=False)
    for entry in pruned:
        if entry.error:
            err.print(f"could not prune {entry.backend_url}: {entry.error}", markup=False)
        elif entry.history_entries or entry.slot_markers:
            err.print(f"pruned {entry.history_entries} audit entries and {entry.slot_markers} slot markers "
                      f"in {entry.backend_url}", markup=False)
    for leak in found.leaks:
        verb = "would destroy" if dry_run else ("destroyed" if leak.destroyed else f"FAILED ({leak.error})")
        out.print(f"{verb} {leak.stack} in {leak.backend_url}: {leak.reason}", markup=False)
    for stray in found.stray_jobs:
        verb = "removed" if stray.removed else "would remove"
        out.print(f"{verb} {', '.join(stray.names)} of run {stray.run_id} ({stray.target}): its client died and "
                  "no stack held it", markup=False)
