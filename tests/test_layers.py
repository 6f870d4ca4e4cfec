"""Dependencies point one way: import-linter's contracts (``[tool.importlinter]`` in pyproject.toml) hold.

The contracts name the layers of ``toolkit`` (see its package docstring) and what
the job side and the toolchain may import; every import counts, those inside
functions too, so a cycle cannot hide behind a late import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config), "--no-cache"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
