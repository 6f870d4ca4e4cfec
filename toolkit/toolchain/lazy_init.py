"""Build-time patches that move the Pulumi CLI's heaviest start-up work to first use.

Every ``pulumi`` process -- two per run -- first runs the ``init`` functions of
every package linked into the CLI. Two copies of zxcvbn-go (a password-strength
estimator, linked for the warning ``pulumi config set`` and ``esc env set`` give
when a value looks like a secret) decompress and parse their word lists there:
about 0.15 s of CPU, two thirds of all package initialisation (measured with
``GODEBUG=inittrace=1 pulumi version``), in processes that never estimate a
password. The toolkit's own build of the CLI vendors those two modules with
that work behind a ``sync.Once`` on the only path that needs it
(``matching.Omnimatch``, whose own lazy check the patch makes thread-safe), so
it runs when -- and only if -- a strength is estimated. Behaviour is otherwise
unchanged. A CLI the user installed is used as it is.

Each patch names the exact text it replaces; a version of a module without it
fails the build with a message, rather than building something unpatched.
"""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

from toolkit.errors import ToolchainError
from toolkit.toolchain.steps import run

RECIPE = "lazy-zxcvbn-1"
"""Names this build recipe; a toolkit-built CLI with another recipe stamp is rebuilt."""

_FREQUENCY = (
    "frequency/frequency.go",
    [
        ('import (\n\t"encoding/json"\n\t"log"\n', 'import (\n\t"encoding/json"\n\t"log"\n\t"sync"\n'),
        (
            "func init() {",
            "var loadOnce sync.Once\n\n"
            "// Load fills Lists on first use (the toolkit's CLI build moved this out of init).\n"
            "func Load() { loadOnce.Do(load) }\n\n"
            "func load() {",
        ),
    ],
)
_MATCHING = (
    "matching/matching.go",
    [
        ('import (\n\t"sort"\n', 'import (\n\t"sort"\n\t"sync"\n'),
        ("func init() {\n\tloadFrequencyList()\n}\n", "var loadOnce sync.Once\n"),
        (
            "\tif dictionaryMatchers == nil || adjacencyGraphs == nil {\n\t\tloadFrequencyList()\n\t}\n",
            "\tloadOnce.Do(loadFrequencyList)\n",
        ),
        ("func loadFrequencyList() {\n", "func loadFrequencyList() {\n\tfrequency.Load()\n"),
    ],
)
MODULES = ("github.com/nbutton23/zxcvbn-go", "github.com/ccojocar/zxcvbn-go")
"""The modules patched, each with ``_FREQUENCY`` and ``_MATCHING``."""


def vendor_patched_modules(work_dir: Path, go: str, env: dict[str, str]) -> list[str]:
    """Copy ``MODULES`` at the versions ``work_dir``'s build resolved, patch them, return replace directives.

    Call after ``go mod tidy``; append the directives to ``go.mod`` before ``go build``.
    """
    vendor = work_dir / "third_party"
    shutil.rmtree(vendor, ignore_errors=True)
    directives = []
    for module in MODULES:
        listed = run([go, "list", "-m", "-f", "{{.Version}} {{.Dir}}", module], f"locate {module}", cwd=work_dir, env=env)
        version, _, source = listed.strip().partition(" ")
        if not source:
            run([go, "mod", "download", f"{module}@{version}"], f"download {module}", cwd=work_dir, env=env)
            source = run([go, "list", "-m", "-f", "{{.Dir}}", module], f"locate {module}", cwd=work_dir, env=env).strip()
        target = vendor / re.sub(r"[^A-Za-z0-9]+", "-", module)
        shutil.copytree(source, target)
        for path in target.rglob("*"):
            path.chmod(path.stat().st_mode | stat.S_IWUSR)  # the module cache is read-only
        if not (target / "go.mod").exists():  # pre-modules versions; a replacement directory needs one
            (target / "go.mod").write_text(f"module {module}\n")
        for relative, patches in (_FREQUENCY, _MATCHING):
            _patch(target / relative, patches, f"{module}@{version}")
        directives.append(f"replace {module} => ./{target.relative_to(work_dir)}")
    return directives


def _patch(path: Path, patches: list[tuple[str, str]], module: str) -> None:
    text = path.read_text()
    for old, new in patches:
        if text.count(old) != 1:
            raise ToolchainError(
                f"cannot apply the toolkit's start-up patch to {module} ({path.name}): the code it expects is "
                "not there. Update toolkit/toolchain/lazy_init.py for this version"
            )
        text = text.replace(old, new)
    path.write_text(text)
