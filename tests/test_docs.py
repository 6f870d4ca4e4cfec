"""The documentation site builds without a warning, and what it shows still matches the code.

``mkdocs build --strict`` turns every warning (a broken link or anchor, a page missing from the nav,
an API reference that names no object, a snippet file that is not there) into a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import docs_previews

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    warnings = [line for line in built.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert built.returncode == 0 and not warnings, built.stderr[-4000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "toolkit pool create" in cli and "--max-concurrent-runs" in cli  # generated from the Typer app
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "RunFuture" in api and "PolicyViolationError" in api


@pytest.mark.parametrize("target", sorted(docs_previews.MOCKED))
def test_a_mocked_preview_on_a_target_page_is_what_the_program_registers(target: str) -> None:
    shown = (docs_previews.PREVIEWS / f"{target}.txt").read_text()
    assert shown == docs_previews.mocked_preview(target), f"regenerate: python -m tests.docs_previews {target}"


def test_every_target_page_shows_a_preview() -> None:
    from toolkit.infra.registry import TARGETS

    for target in TARGETS:
        page = (ROOT / "docs" / "targets" / f"{target}.md").read_text()
        assert f'--8<-- "targets/previews/{target}.txt"' in page
        assert (docs_previews.PREVIEWS / f"{target}.txt").stat().st_size > 0


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "./scripts/setup" in readme and "./scripts/test" in readme and "scripts/test --fast" in readme
