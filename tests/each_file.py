"""Run every test file alone, each in its own pytest process: a test must not depend on what ran before it.

``scripts/test --each-file [--fast] [pytest arguments]`` runs this. The files
are those with at least one test the arguments select (``--collect-only``);
each runs with the same arguments, and the summary lists each file's outcome,
count line and time. Exit status 1 when any file fails alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FileResult:
    path: str
    code: int
    summary: str
    seconds: float
    output: str

    @property
    def passed(self) -> bool:
        return self.code == 0


def selected_files(pytest_args: list[str]) -> list[str]:
    """Test files holding at least one test that ``pytest_args`` select, in collection order."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=ROOT, capture_output=True, text=True,
    )
    if result.returncode not in (0, 5):
        sys.exit(f"collection failed (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    files: dict[str, None] = {}
    for line in result.stdout.splitlines():
        if "::" in line:
            files.setdefault(line.split("::", 1)[0])
    return list(files)


def run_alone(path: str, pytest_args: list[str]) -> FileResult:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, path],
        cwd=ROOT, capture_output=True, text=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return FileResult(path, result.returncode, lines[-1] if lines else result.stderr.strip()[-200:],
                      time.monotonic() - started, result.stdout + result.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="files run side by side (default 1)")
    options, pytest_args = parser.parse_known_args(argv)
    files = selected_files(pytest_args)
    print(f"{len(files)} test files, each alone ({options.jobs} at a time)", flush=True)
    results = []
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        for result in pool.map(lambda path: run_alone(path, pytest_args), files):
            results.append(result)
            print(f"{'ok  ' if result.passed else 'FAIL'} {result.seconds:6.1f}s  {result.path}  {result.summary}",
                  flush=True)
    failed = [result for result in results if not result.passed]
    for result in failed:
        print(f"\n===== {result.path} alone (exit {result.code}) =====\n{result.output[-6000:]}")
    print(f"\n{len(results) - len(failed)} of {len(results)} files pass alone"
          + (f"; failing alone: {', '.join(result.path for result in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
