"""Pools as code: a work pool declared as a Pulumi resource, published to the pool registry.

``WorkPoolResource("gpu", type="docker", base_job_template=..., storage=...)`` in
a Pulumi program (the top-level ``Pulumi.yaml`` + ``stacks/``) makes
``pulumi preview`` validate the pool and show the template fields that change,
``pulumi up`` write the pool document into the registry, and ``pulumi destroy``
remove it.

Why a Python dynamic provider: the pool registry is the toolkit's own fsspec
store, written by ``PoolRegistry``, and validation is ``parse_pool`` and
``check_template``; a dynamic provider runs exactly that code in the engine's
check/diff/create/update/delete calls, with no provider plugin to build or ship.
A component resource could not validate at preview time or delete on destroy.
The provider class is pickled into the state by reference (it lives in an
importable module), so state written by one toolkit version is handled by the
code of the next.

The registry URL comes from the stack's ``toolkit:registryUrl`` config (default:
the registry of whoever runs Pulumi, ``TOOLKIT_POOLS_URL`` or
``$TOOLKIT_HOME/pools``); a relative local path is relative to the project root.
Changing it moves the pool: publish to the new registry, remove from the old.
Pulumi does not carry ``null`` map entries, so a published template has no
``"default": null`` lines; templating treats a missing default the same way.

The Python dynamic-provider protocol carries no detailed diff (``DiffResult``
has no field for it), so ``diff`` prints one line per changed field, e.g.
``pool 'gpu': ~ base_job_template.variables.properties.memory.default: '8Gi' ->
'16Gi'``, which the engine shows as a message of the preview; ``pulumi preview
--diff`` also renders the nested change from the old and new inputs.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
import jsonschema
import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult
from pulumi.runtime.rpc import UNKNOWN

from toolkit import settings
from toolkit.errors import ConfigError
from toolkit.nested import any_leaf
from toolkit.policy_packs import PUBLISHED, PUBLISHED_DIR, check_pack_directory
from toolkit.pools.diff import document, field_changes
from toolkit.pools.registry import PoolRegistry, StorageConfig, WorkPool, parse_pool
from toolkit.templating import check_template
from toolkit.workspace import current_user

CONFIG_NAMESPACE = "toolkit"
REGISTRY_URL_KEY = "registryUrl"
DOCUMENT_FIELDS = (
    "name", "type", "base_job_template", "storage", "backend_url", "description",
    "policy_packs", "max_concurrent_runs", "secrets_provider", "image_registry",
)
"""The inputs that make up the published pool document (the rest say where it is published)."""


def template_with_defaults(type_: str, template: Mapping[str, Any] | None = None, **defaults: Any) -> dict[str, Any]:
    """``template`` (default: the type's default template) with these variables' defaults replaced.

    The usual way to tailor a pool: ``template_with_defaults("docker", mem_limit="8g")``.
    """
    from toolkit.infra.registry import get_target_class  # late: the target modules are heavy

    result = copy.deepcopy(dict(template)) if template is not None else get_target_class(type_).default_template()
    properties = result.get("variables", {}).get("properties", {})
    unknown = sorted(set(defaults) - set(properties))
    if unknown:
        raise ConfigError(
            f"cannot set defaults for {', '.join(map(repr, unknown))}: the {type_!r} template has no such "
            f"variable. Valid: {', '.join(sorted(properties))}"
        )
    definitions = {"$defs": result["variables"]["$defs"]} if "$defs" in result.get("variables", {}) else {}
    for name, value in defaults.items():
        schema = {**properties[name], **definitions}  # a property's "#/$defs/..." refers to the variables schema's
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if error is not None:
            raise ConfigError(
                f"default {value!r} for {type_!r} variable {name!r} is invalid: {error.message}. Pass a valid value"
            )
        properties[name]["default"] = copy.deepcopy(value)
    return result


def registry_url_from_config() -> str:
    """The stack's ``toolkit:registryUrl`` (relative paths from the project root), else the user's registry."""
    url = pulumi.Config(CONFIG_NAMESPACE).get(REGISTRY_URL_KEY) or settings.pools_url()
    protocol, location = fsspec.core.split_protocol(url)
    if protocol in (None, "file", "local"):
        path = Path(location).expanduser()
        return str(path if path.is_absolute() else Path(pulumi.get_root_directory()) / path)
    return url


def _has_unknowns(value: Any) -> bool:
    return any_leaf(value, lambda item: item == UNKNOWN)


def pool_from_inputs(props: Mapping[str, Any]) -> WorkPool:
    """The pool a resource's inputs describe; ``ConfigError`` naming the problem if they are invalid."""
    name = props.get("name")
    template = props.get("base_job_template")
    if template is not None:
        check_template(template, where=f"pool {name!r}")
    fields = {key: props[key] for key in DOCUMENT_FIELDS if props.get(key) is not None}
    return parse_pool(json.dumps(fields), source=f"WorkPoolResource {name!r}")


class _WorkPoolProvider(ResourceProvider):
    """Validates at check, compares published documents at diff, writes and removes them in the registry."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if _has_unknowns({key: news.get(key) for key in DOCUMENT_FIELDS}):
            return CheckResult(news, [])  # computed from other resources: checked at create/update
        try:
            pool = pool_from_inputs(news)
        except ConfigError as exc:
            # No property name: the engine would print the property's whole value before the reason.
            return CheckResult(news, [CheckFailure("", str(exc))])
        # Inputs as published: defaults filled in (the type's template when none was given).
        return CheckResult({**news, **document(pool)}, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changes = field_changes(*({key: props.get(key) for key in DOCUMENT_FIELDS} for props in (olds, news)))
        moved = olds.get("registry_url") != news.get("registry_url")
        # The engine shows a provider's output as messages: one line per changed field, readable
        # without `--diff`'s rendering of the whole template.
        name = news.get("name")
        lines = [f"pool {name!r}: {change}" for change in changes]
        if moved:
            lines.append(f"pool {name!r}: moves from {olds.get('registry_url')} to {news.get('registry_url')}")
        if lines:
            print("\n".join(lines), file=sys.stderr, flush=True)
        return DiffResult(changes=bool(lines), replaces=["registry_url"] if moved else [], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        pool = pool_from_inputs(props)
        registry = PoolRegistry(props["registry_url"])
        registry.save(pool, overwrite=True)  # adopts a pool created by hand (`toolkit pool export` migration)
        _note_change(registry, pool.name, "create", pool)
        return CreateResult(id_=f"{registry.url}/{pool.name}", outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        registry, pool = PoolRegistry(news["registry_url"]), pool_from_inputs(news)
        registry.save(pool, overwrite=True)
        _note_change(registry, pool.name, "update", pool)
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        registry = PoolRegistry(props["registry_url"])
        try:
            registry.delete(props["name"])
        except ConfigError:
            pass  # already gone (deleted by hand): the goal of delete is met
        _note_change(registry, props["name"], "delete", None)


def _note_change(registry: PoolRegistry, name: str, op: str, pool: WorkPool | None) -> None:
    """The pool's history (the dashboard's pool page): the Pulumi stack that publishes it may be anyone's."""
    registry.record_change(name, op, json.loads(pool.to_document()) if pool else None, current_user())


class WorkPoolResource(Resource, module="toolkit", name="WorkPool"):
    """A work pool published to the pool registry by ``pulumi up`` and removed by ``pulumi destroy``.

    The resource name is the pool name. ``base_job_template`` defaults to the
    type's default template; ``template_with_defaults`` tailors either.
    """

    name: pulumi.Output[str]
    type: pulumi.Output[str]
    base_job_template: pulumi.Output[dict[str, Any]]
    storage: pulumi.Output[dict[str, Any]]
    registry_url: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        type: pulumi.Input[str],  # noqa: A002 - the pool field's name
        base_job_template: pulumi.Input[Mapping[str, Any]] | None = None,
        storage: StorageConfig | pulumi.Input[Mapping[str, Any]] | None = None,
        description: pulumi.Input[str] = "",
        backend_url: pulumi.Input[str] | None = None,
        policy_packs: pulumi.Input[list[str]] | None = None,
        max_concurrent_runs: pulumi.Input[int] | None = None,
        secrets_provider: pulumi.Input[str] | None = None,
        image_registry: pulumi.Input[str] | pulumi.Input[Mapping[str, Any]] | None = None,
        registry_url: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "name": resource_name,
            "type": type,
            "base_job_template": base_job_template,
            "storage": storage.model_dump(exclude_none=True) if isinstance(storage, StorageConfig) else storage,
            "description": description,
            "backend_url": backend_url,
            "policy_packs": policy_packs,
            "max_concurrent_runs": max_concurrent_runs,
            "secrets_provider": secrets_provider,
            "image_registry": image_registry,
            "registry_url": registry_url or registry_url_from_config(),
        }
        super().__init__(_WorkPoolProvider(), resource_name, props, opts)


def _pack_files(directory: Path) -> dict[str, str]:
    """The pack's source files (text), relative path -> content; environments and caches left out."""
    skip = {"venv", ".venv", "__pycache__", ".git"}
    return {
        str(path.relative_to(directory)): path.read_text()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not skip.intersection(path.relative_to(directory).parts)
    }


def _check_pack_files(name: str, files: Mapping[str, str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for relative, text in files.items():
            (Path(scratch) / relative).parent.mkdir(parents=True, exist_ok=True)
            (Path(scratch) / relative).write_text(text)
        try:
            check_pack_directory(Path(scratch))
        except ValueError as exc:
            raise ConfigError(f"policy pack {name!r}: {str(exc).replace(scratch, 'its directory')}") from None


class _PolicyPackProvider(ResourceProvider):
    """Copies a pack's files to ``<registry>/policy-packs/<name>/``; pools name it ``registry:<name>``."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if _has_unknowns(news.get("files")):
            return CheckResult(news, [])
        try:
            _check_pack_files(news["name"], news["files"])
        except ConfigError as exc:
            return CheckResult(news, [CheckFailure("", str(exc))])
        return CheckResult(news, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        moved = olds.get("registry_url") != news.get("registry_url")
        changed = sorted(set(olds.get("files", {}).items()) ^ set(news.get("files", {}).items()))
        if changed:
            names = sorted({relative for relative, _ in changed})
            print(f"policy pack {news['name']!r}: ~ {', '.join(names)}", file=sys.stderr, flush=True)
        return DiffResult(changes=bool(changed) or moved, replaces=["registry_url"] if moved else [],
                          delete_before_replace=False)

    def _publish(self, props: Mapping[str, Any]) -> str:
        fs, root = fsspec.core.url_to_fs(props["registry_url"])
        target = f"{root.rstrip('/')}/{PUBLISHED_DIR}/{props['name']}"
        if fs.exists(target):
            fs.rm(target, recursive=True)  # files removed from the pack go too
        for relative, text in props["files"].items():
            path = f"{target}/{relative}"
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, text.encode())
        return f"{props['registry_url'].rstrip('/')}/{PUBLISHED_DIR}/{props['name']}"

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=self._publish(props), outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._publish(news)
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        fs, root = fsspec.core.url_to_fs(props["registry_url"])
        target = f"{root.rstrip('/')}/{PUBLISHED_DIR}/{props['name']}"
        if fs.exists(target):
            fs.rm(target, recursive=True)


class PolicyPackResource(Resource, module="toolkit", name="PolicyPack"):
    """A Python policy pack published with the pools; a pool enforces it with ``policy_packs=["registry:NAME"]``.

    The resource name is the pack's name; ``directory`` (relative to the project
    root) holds its ``PulumiPolicy.yaml`` and ``__main__.py``. Publishing copies
    the source files, so every client runs the same pack without a checkout.
    """

    name: pulumi.Output[str]
    registry_url: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        directory: str,
        registry_url: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        path = Path(directory)
        path = path if path.is_absolute() else Path(pulumi.get_root_directory()) / path
        props = {
            "name": resource_name,
            "files": _pack_files(path),
            "registry_url": registry_url or registry_url_from_config(),
        }
        super().__init__(_PolicyPackProvider(), resource_name, props, opts)

    @property
    def reference(self) -> str:
        """What a pool's ``policy_packs`` names to enforce this pack."""
        return f"{PUBLISHED}{self._name}"
