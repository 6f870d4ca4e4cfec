"""The toolkit's build of the Pulumi CLI defers its dependencies' start-up work, and nothing else changes.

Counted, not timed: ``GODEBUG=inittrace=1`` reports the bytes each package's
``init`` allocates; the deferred word lists allocated 18 MB per copy there.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.pulumi_cli import make_cli
from toolkit import settings
from toolkit.errors import ToolchainError
from toolkit.toolchain.lazy_init import MODULES, _patch

_INIT = re.compile(r"^init (?P<package>\S+) @.*?, (?P<bytes>\d+) bytes, (?P<allocs>\d+) allocs$")


def test_a_patch_refuses_code_it_does_not_know(tmp_path: Path) -> None:
    source = tmp_path / "frequency.go"
    source.write_text("package frequency\n\nfunc init() {}\n")
    with pytest.raises(ToolchainError, match=r"example.com/zxcvbn@v1 \(frequency.go\).*lazy_init.py"):
        _patch(source, [("func init() {\n\tloadFrequencyList()\n}\n", "")], "example.com/zxcvbn@v1")
    assert source.read_text() == "package frequency\n\nfunc init() {}\n"  # untouched


@pytest.mark.engine
def test_the_toolkit_built_cli_loads_no_word_lists_at_start() -> None:
    binary = settings.pulumi_binary()
    if binary != settings.bin_dir() / "pulumi":
        pytest.skip(f"the CLI in use ({binary}) is not the toolkit's own build")
    trace = subprocess.run(
        [str(binary), "version"], env={**os.environ, "GODEBUG": "inittrace=1"}, capture_output=True, text=True, check=True
    ).stderr
    allocated = {m["package"]: int(m["bytes"]) for m in map(_INIT.match, trace.splitlines()) if m}
    for module in MODULES:
        assert allocated[f"{module}/frequency"] < 1024, f"{module} still parses its word lists at start"


@pytest.mark.engine
def test_config_set_still_flags_values_that_look_like_secrets(tmp_path: Path) -> None:
    """The deferred lists still load when needed: `config set` measures a value's strength with them."""
    cli = make_cli(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: strength\nruntime: python\n")
    cli.run("stack", "init", "dev", cwd=project)
    flagged = cli.run("config", "set", "apiToken", "x7#Kq9!zR2@mW4$pLq", cwd=project, check=False)
    assert flagged.returncode != 0 and "looks like a secret" in flagged.output
    assert cli.run("config", "set", "apiToken", "aaaa", cwd=project).returncode == 0
