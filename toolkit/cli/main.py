"""The command line: thin, every command calls the library and formats its answer.

Toolkit errors print as one red message (they already say what to do) and
exit 1; ``--json`` prints machine-readable documents on stdout, with progress
and job logs on stderr. One module per sub-app: ``runs`` (preview, run and
runs), ``pool``, ``env``, ``toolchain`` (and doctor) and ``gc``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from toolkit.cli import env, gc, pool, runs, toolchain
from toolkit.cli.output import err
from toolkit.errors import ToolkitError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run a Python function on real infrastructure through an ephemeral Pulumi stack per call.",
)
app.add_typer(pool.pool_app, name="pool")
app.add_typer(env.env_app, name="env")
app.add_typer(runs.runs_app, name="runs")
app.add_typer(toolchain.toolchain_app, name="toolchain")
app.command()(toolchain.doctor)
app.command()(runs.preview)
app.command()(runs.run)
app.command("gc")(gc.gc_command)


@app.command("ui")
def ui_command(
    backend: Annotated[str | None, typer.Option(help="Only this state backend's runs (default: every backend gc knows).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; any but 127.0.0.1 needs the token printed at start.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 8765,
    read_only: Annotated[bool, typer.Option("--read-only", help="No actions: nothing can be cancelled, collected or pruned.")] = False,
) -> None:
    """The dashboard in a browser: runs, maps, pools, leaked stacks, environments (extra: toolkit[ui])."""
    from toolkit.errors import ConfigError

    try:
        from toolkit.ui.server import serve
    except ImportError as exc:
        from toolkit.ui import INSTALL_HINT

        raise ConfigError(f"`toolkit ui` needs the dashboard's packages ({exc.name} is missing): {INSTALL_HINT}") from None
    serve(backend, host, port, read_only, say=lambda line: err.print(line, markup=False))


def main() -> None:
    """Entry point: toolkit errors become one clear message and exit status 1."""
    from rich.text import Text

    try:
        app()
    except ToolkitError as exc:
        err.print(Text("error: ", style="red") + Text(str(exc)))
        sys.exit(1)
