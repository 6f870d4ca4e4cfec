"""MkDocs hook: renders the Typer app's commands into the page that holds the ``<!-- cli-reference -->`` marker.

Read from the Click command Typer builds, so the reference is the app itself: a command or option
added to ``toolkit.cli`` shows up here with its help text, and nothing is written by hand.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"


def _option_row(param: Any, ctx: Any) -> str:
    record = param.get_help_record(ctx)
    if record is None:  # an argument
        name = param.human_readable_name
        return f"| `{name}` | argument{', required' if param.required else ''} |"
    names, help_text = record
    cell = help_text.replace("|", "\\|")
    return f"| `{names}` | {cell} |"


def _command(command: Any, path: list[str], parent: Any) -> list[str]:
    """Typer's commands are Click's, from the copy of Click that Typer carries: read them by duck typing."""
    ctx = command.context_class(command, info_name=path[-1], parent=parent)
    lines: list[str] = []
    if path[1:]:
        lines += [f"{'#' * min(len(path), 4)} `{' '.join(path)}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    lines += ["```text", " ".join(command.collect_usage_pieces(ctx)).join((f"{' '.join(path)} ", "")), "```", ""]
    rows = [_option_row(param, ctx) for param in command.get_params(ctx) if param.name != "help"]
    if rows:
        lines += ["| option | |", "|---|---|", *rows, ""]
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            lines += _command(command.get_command(ctx, name), [*path, name], ctx)
    return lines


def reference() -> str:
    import typer

    from toolkit.cli.main import app

    return "\n".join(_command(typer.main.get_command(app), ["toolkit"], None))


def on_page_markdown(markdown: str, **_: Any) -> str:
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
