"""What every command of the CLI shares: where it prints, the --json option, durations.

Results go to stdout (``out``; JSON documents with ``--json``), progress, job
logs and messages to stderr (``err``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON document for scripts.")]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=repr) + "\n")


def json_progress(as_json: bool) -> None:
    """With --json, progress (environment builds included) becomes JSON lines on stderr."""
    from toolkit import progress

    if as_json and progress.enabled():
        os.environ["TOOLKIT_PROGRESS"] = "json"


def duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 1h or 2d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
