"""``toolkit pool export``: the pools of a registry written out as a pools-as-code program.

The migration from click-ops: pools made with ``toolkit pool create`` become
``WorkPoolResource`` declarations in ``stacks/``. The first ``pulumi up`` then
adopts them (it writes the same documents back), and from there on changes go
through review and ``pulumi preview``. Templates are written as Python literals,
one module for all pools, to be split by family as the team sees fit.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import ConfigError
from toolkit.pools.diff import document
from toolkit.pools.registry import PoolRegistry, WorkPool, builtin_pool

MODULE = "exported_pools.py"
MAIN = "__main__.py"
_MAIN_TEXT = '''"""Work pools as code; `pulumi preview --diff` shows changes, `pulumi up` publishes them."""

import exported_pools  # noqa: F401 - declares the pools
'''


def _literal(value: object, indent: int) -> str:
    """A Python literal for JSON data: on one line if it fits in 100 columns, else one item per line."""
    flat = repr(value)
    if indent + len(flat) <= 100 or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f"{inner}{key!r}: {_literal(item, indent + 4)}," for key, item in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    items = [f"{inner}{_literal(item, indent + 4)}," for item in value]
    return "[\n" + "\n".join(items) + "\n" + " " * indent + "]"


def render_pool(pool: WorkPool) -> str:
    fields = document(pool)
    arguments = [f"    {fields.pop('name')!r},", f"    type={fields.pop('type')!r},"]
    arguments += [f"    {key}={_literal(value, 4)}," for key, value in fields.items()]
    return "WorkPoolResource(\n" + "\n".join(arguments) + "\n)"


def render_module(pools: list[WorkPool], source: str) -> str:
    header = (
        f'"""Work pools exported from {source} by `toolkit pool export`.\n\n'
        "The first `pulumi up` adopts them (it writes the same documents back); edit them here\n"
        'from now on. Publish to that registry with `pulumi config set toolkit:registryUrl URL`.\n"""\n\n'
        "from toolkit import WorkPoolResource\n"
    )
    return header + "".join(f"\n{render_pool(pool)}\n" for pool in pools)


def export_program(registry: PoolRegistry, out_dir: Path, force: bool = False) -> list[Path]:
    """Write ``out_dir/exported_pools.py`` (and a ``__main__.py`` if none); returns the files written.

    Built-in pools are left out unless the registry holds a changed version of them.
    """
    pools = [pool for pool in map(registry.get, registry.names()) if pool != builtin_pool(pool.name)]
    if not pools:
        raise ConfigError(f"the registry {registry.url} has no pools to export. Create one with `toolkit pool create`")
    module = out_dir / MODULE
    if module.exists() and not force:
        raise ConfigError(f"{module} exists; pass --force to overwrite it, or --out another directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    module.write_text(render_module(pools, registry.url))
    written = [module]
    main = out_dir / MAIN
    if not main.exists():
        main.write_text(_MAIN_TEXT)
        written.append(main)
    return written

