"""Runs one Pulumi Python program against the engine's resource monitor (one ``Run`` of the language host).

The language host (``language_host.py``) starts this file by its path, in a
fresh interpreter per ``Run``: the project's virtualenv may not have the
toolkit installed, so this file imports only the standard library and
``pulumi``; and a fresh process re-imports the program's modules, whose
resource declarations run at import time, on every preview and update.

Exit status is the contract with the host: 0 = success; ``EXIT_REPORTED`` = the
error was already sent to the engine as a diagnostic (the host answers with
``bail``, so the engine prints nothing more); anything else is unexpected and
the host reports it. SIGINT (the engine cancelling the run after an error
elsewhere, or Ctrl-C) ends the program at once, without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import runpy
import signal
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXIT_REPORTED = 32
"""The error has been shown to the user already (the value Pulumi's own hosts use)."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a Pulumi Python program (started by the language host)")
    parser.add_argument("--monitor", required=True)
    parser.add_argument("--engine", default="")
    parser.add_argument("--project", required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--organization", default="")
    parser.add_argument("--root-directory", default="")
    parser.add_argument("--pwd", default="")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--parallel", type=int, default=0)
    parser.add_argument("program", help="the program: a directory with __main__.py, or a .py file")
    parser.add_argument("args", nargs="*")
    return parser.parse_args(argv)


def _entry(program: Path) -> Path:
    return program / "__main__.py" if program.is_dir() else program


def _user_traceback(exc: BaseException, program_dir: Path) -> str:
    """The traceback from the first frame in the program's directory on (runtime frames say nothing to users)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for index, frame in enumerate(frames):
        path = Path(frame.filename)
        if path.is_file() and path.resolve().is_relative_to(program_dir):
            return "".join(traceback.format_list(frames[index:]))
    return "".join(traceback.format_list(frames))


def _configure(args: argparse.Namespace) -> None:
    """The Pulumi runtime as the language host's arguments describe it: the engine, the stack, its config."""
    import pulumi.runtime

    pulumi.runtime.set_all_config(pulumi.runtime.get_config_env(), pulumi.runtime.get_config_secret_keys_env())
    pulumi.runtime.configure(
        pulumi.runtime.Settings(
            project=args.project,
            stack=args.stack,
            monitor=args.monitor,
            engine=args.engine or None,
            parallel=args.parallel,
            dry_run=args.dry_run,
            organization=args.organization or None,
            root_directory=args.root_directory or None,
        )
    )


def main(argv: list[str]) -> int:
    # Imported here so `--help` and argument errors need no pulumi install.
    import pulumi
    import pulumi.runtime

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the engine reports why it stopped the run
    args = _parse(argv)
    program = Path(args.program).absolute()
    entry = _entry(program)
    program_dir = entry.parent.resolve()

    _configure(args)
    if not entry.is_file():
        expected = "a __main__.py in it" if program.is_dir() else "that file"
        pulumi.log.error(
            f"no Python program at {program}: expected {expected}. Point `main:` in Pulumi.yaml at the "
            "program's directory or file"
        )
        return EXIT_REPORTED

    if args.pwd:
        os.chdir(args.pwd)
    # As `python path/to/program`: the program's directory first on sys.path (not this file's).
    sys.path[0] = str(program_dir)
    sys.argv = [str(entry), *args.args]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    executor = ThreadPoolExecutor(max_workers=max(args.parallel, 1) * 4)
    loop.set_default_executor(executor)
    # A failed resource leaves futures nobody awaits; asyncio's complaints about them are noise.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        loop.run_until_complete(pulumi.runtime.run_in_stack(lambda: runpy.run_path(str(entry), run_name="__main__")))
    except pulumi.RunError as exc:
        pulumi.log.error(str(exc))
        return EXIT_REPORTED
    except Exception as exc:  # noqa: BLE001 - any program error becomes one clear diagnostic
        pulumi.log.error(
            f"the program failed: {type(exc).__name__}: {exc}\n\n"
            f"Traceback (program frames):\n{_user_traceback(exc, program_dir)}"
        )
        return EXIT_REPORTED
    finally:
        executor.shutdown(wait=True)
        loop.close()
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
