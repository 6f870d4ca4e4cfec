"""``toolkit pool import``: a Prefect work pool's base job template as an equivalent pool.

Input is what Prefect prints: ``prefect work-pool get-default-base-job-template
--type T`` (the template alone) or ``prefect work-pool inspect NAME --output
json`` (the pool, with its type and bundle storage). The pool made is the
target's own default template with the Prefect template's settings carried
into it:

* each Prefect variable maps through the target's ``synonyms`` table: as is,
  renamed (from -> to, units converted) or not supported (why). Its default
  becomes our variable's default.
* ``job_configuration`` is compared with the default template of the
  collection it came from (``templates/``, dumped from the real packages):
  what a platform team changed there is a setting too. Additions and
  replacements inside the job resource (a Kubernetes Job manifest, an ECS
  task definition: same shape on both sides) become ``customizations``;
  anything else cannot be carried over.

A setting that cannot be carried over is *lost*: the import refuses unless
``allow_lossy``. A not-supported variable left at its collection default (a
worker's poll interval, ``keep_job=False``) loses nothing.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any, Literal

import jsonpatch
import jsonschema
from pydantic import BaseModel

from toolkit import templating
from toolkit.errors import ConfigError
from toolkit.infra.base import Target
from toolkit.infra.registry import get_target_class, prefect_types
from toolkit.infra.synonyms import translate
from toolkit.pools.registry import StorageConfig, WorkPool

PREFECT_TYPES = prefect_types()
"""Prefect work pool type -> the toolkit target that runs the same kind of job (the target registry's rows)."""

BUNDLE_STORAGE = {"prefect_aws": "s3", "prefect_gcp": "gs", "prefect_azure": "az"}
"""A Prefect pool's bundle upload step (by collection) -> the fsspec scheme of the same storage."""


class VariableMapping(BaseModel):
    """What became of one Prefect variable."""

    name: str
    outcome: Literal["as is", "renamed", "combined", "not supported"]
    ours: str | None = None
    default: Any = None
    note: str = ""
    lost: bool = False
    """A setting the template made that the pool cannot keep."""


class SettingMapping(BaseModel):
    """What became of one change a platform team made to ``job_configuration``."""

    path: str
    op: str
    value: Any = None
    outcome: Literal["customization", "not supported"]
    note: str = ""
    lost: bool = False


class ImportReport(BaseModel):
    prefect_type: str
    target: str
    reference: dict[str, str]
    """Package versions of the collection template the import compared with."""
    variables: list[VariableMapping]
    settings: list[SettingMapping]
    storage: str | None = None

    @property
    def lost(self) -> list[str]:
        return [v.name for v in self.variables if v.lost] + [s.path for s in self.settings if s.lost]


def _templates() -> Any:
    return resources.files("toolkit.prefect") / "templates"


@functools.cache
def reference_template(prefect_type: str) -> dict[str, Any]:
    """The collection's default base job template for ``prefect_type`` (as dumped, see versions.json)."""
    return json.loads((_templates() / f"{prefect_type}.json").read_text())


@functools.cache
def reference_versions() -> dict[str, dict[str, str]]:
    return json.loads((_templates() / "versions.json").read_text())


def parse_document(text: str, source: str) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """``(base_job_template, prefect type or None, storage_configuration)`` from either form Prefect prints."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not JSON ({exc}). Give the output of `prefect work-pool "
                          "get-default-base-job-template --type T` or `prefect work-pool inspect NAME --output json`") from None
    if isinstance(data, dict) and "base_job_template" in data:
        return data["base_job_template"], data.get("type"), data.get("storage_configuration") or {}
    if isinstance(data, dict) and {"job_configuration", "variables"} <= set(data):
        return data, None, {}
    raise ConfigError(
        f"{source} is neither a base job template (keys 'job_configuration' and 'variables') nor a work pool "
        "(key 'base_job_template'); export it with `prefect work-pool inspect NAME --output json`"
    )


def detect_type(template: dict[str, Any], source: str) -> str:
    """The Prefect type whose default template has exactly these ``job_configuration`` keys."""
    keys = set(template.get("job_configuration", {}))
    matches = [kind for kind in PREFECT_TYPES if set(reference_template(kind)["job_configuration"]) == keys]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(
        f"cannot tell which kind of Prefect work pool {source} is for; pass --type, one of "
        f"{', '.join(PREFECT_TYPES)}"
    )


def _empty(value: Any) -> bool:
    return value in (None, False, "", [], {})


def _map_variables(
    schema: dict[str, Any], reference: dict[str, Any], target: type[Target], ours: dict[str, Any]
) -> list[VariableMapping]:
    properties = schema.get("properties", {})
    stock = reference.get("properties", {})
    mapped: list[VariableMapping] = []
    for name, prop in properties.items():
        default = prop.get("default")
        synonym = target.synonyms.get(name)
        changed = not _empty(default) and default != stock.get(name, {}).get("default")
        if synonym is None and name in ours:
            mapped.append(VariableMapping(name=name, outcome="as is", ours=name, default=default))
        elif synonym is None:
            mapped.append(VariableMapping(
                name=name, outcome="not supported", default=default, lost=not _empty(default),
                note=f"{target.name} has no variable of that name (the template's own); "
                     "express it with the target's variables or customizations",
            ))
        elif synonym.ours is None:
            mapped.append(VariableMapping(name=name, outcome="not supported", default=default, note=synonym.why,
                                          lost=changed))
        elif synonym.part_of:
            mapped.append(VariableMapping(name=name, outcome="combined", ours=synonym.ours, default=default,
                                          note=synonym.why))
        else:
            outcome = "as is" if synonym.ours == name else "renamed"
            mapped.append(VariableMapping(name=name, outcome=outcome, ours=synonym.ours, default=default,
                                          note=synonym.why))
    return mapped


def _carry_defaults(mapped: list[VariableMapping], target: type[Target], ours: dict[str, Any]) -> None:
    """Set our variables' defaults from the Prefect template's; a default ours cannot hold is lost."""
    given = {m.name: m.default for m in mapped if m.ours and m.default is not None}
    for mapping in mapped:
        if mapping.ours is None or mapping.outcome == "combined" or mapping.default is None:
            continue
        partners = {
            name: value for name, value in given.items()
            if name in target.synonyms and target.synonyms[name].part_of == mapping.name
        }
        converted = translate(target.synonyms, {mapping.name: mapping.default, **partners})
        value = converted[mapping.ours]
        prop = ours[mapping.ours]
        try:
            jsonschema.validate(value, prop)
        except jsonschema.ValidationError as exc:
            mapping.lost = True
            mapping.note = f"its default {mapping.default!r} is not valid for {mapping.ours!r} here: {exc.message}"
            continue
        if isinstance(value, dict) and isinstance(prop.get("default"), dict):
            value = {**prop["default"], **value}
        prop["default"] = value


def _map_settings(config: dict[str, Any], reference: dict[str, Any], target: type[Target]) -> list[SettingMapping]:
    """Changes a platform team made to ``job_configuration``, as customizations where the shapes agree."""
    root = target.customization_root
    settings: list[SettingMapping] = []
    for op in jsonpatch.make_patch(reference, config).patch:
        path, value = op["path"], op.get("value")
        carried = (
            op["op"] in ("add", "replace")
            and root
            and path.startswith(root + "/")
            and not templating.placeholders(value)
            and target.name in ("kubernetes", "ecs")  # the same resource shape on both sides
        )
        if carried:
            inner = path[len(root):]
            last = inner.rsplit("/", 1)[-1]
            settings.append(SettingMapping(
                path=path, op="add" if not last.isdigit() else op["op"], value=value, outcome="customization",
                note=f"customizations: {op['op']} {inner}",
            ))
        else:
            why = ("it uses a Prefect placeholder" if templating.placeholders(value)
                   else "the toolkit builds this part of the job itself")
            settings.append(SettingMapping(path=path, op=op["op"], value=value, outcome="not supported",
                                           note=why, lost=True))
    return settings


def _storage(storage_configuration: dict[str, Any]) -> str | None:
    """``s3://bucket`` etc. from a Prefect pool's bundle upload step, when it names a bucket."""
    for step, options in (storage_configuration.get("bundle_upload_step") or {}).items():
        scheme = BUNDLE_STORAGE.get(step.split(".", 1)[0])
        bucket = (options or {}).get("bucket") or (options or {}).get("container")
        if scheme and bucket:
            return f"{scheme}://{bucket}"
    return None


def import_pool(
    text: str,
    name: str,
    source: str,
    prefect_type: str | None = None,
    storage: str | None = None,
    allow_lossy: bool = False,
) -> tuple[WorkPool, ImportReport]:
    """An equivalent pool and the per-variable report; ``ConfigError`` if settings would be lost."""
    template, declared, storage_configuration = parse_document(text, source)
    prefect_type = prefect_type or declared or detect_type(template, source)
    if prefect_type not in PREFECT_TYPES:
        raise ConfigError(f"Prefect work pool type {prefect_type!r} has no toolkit target; "
                          f"supported: {', '.join(PREFECT_TYPES)}")
    target = get_target_class(PREFECT_TYPES[prefect_type])
    reference = reference_template(prefect_type)
    ours_template = target.default_template()
    ours = ours_template["variables"]["properties"]
    variables = _map_variables(template.get("variables", {}), reference["variables"], target, ours)
    _carry_defaults(variables, target, ours)
    settings = _map_settings(template.get("job_configuration", {}), reference["job_configuration"], target)
    customizations = [{"op": s.op, "path": s.path[len(target.customization_root):], "value": s.value}
                      for s in settings if s.outcome == "customization"]
    if customizations:
        ours["customizations"]["default"] = [*(ours["customizations"].get("default") or []), *customizations]
    report = ImportReport(
        prefect_type=prefect_type,
        target=target.name,
        reference=reference_versions().get(prefect_type, {}),
        variables=variables,
        settings=settings,
        storage=storage or _storage(storage_configuration),
    )
    pool_document: dict[str, Any] = {
        "name": name,
        "type": target.name,
        "base_job_template": ours_template,
        "description": f"imported from a Prefect {prefect_type} work pool ({source})",
    }
    if report.storage:
        pool_document["storage"] = StorageConfig(url=report.storage, mode="shared-prefix").model_dump()
    pool = WorkPool.model_validate(pool_document)
    _check_renders(pool, target)
    if report.lost and not allow_lossy:
        raise LossyImportError(report)
    return pool, report


class LossyImportError(ConfigError):
    """The import would drop settings; carries the report so the CLI can print it."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(
            f"importing this {report.prefect_type} template would lose {len(report.lost)} setting(s): "
            f"{', '.join(report.lost)}. Change them in the template, or pass --allow-lossy to import without them"
        )
        self.report = report


def _check_renders(pool: WorkPool, target: type[Target]) -> None:
    """The pool's template with its defaults renders to a valid job (customizations apply)."""
    runtime = {"run_id": "000000000000", "pool_name": pool.name, "function_name": "check"}
    config, _ = templating.render(
        copy.deepcopy(pool.base_job_template), [], runtime, pool.name, target.customization_root, target.synonyms
    )
    target().parse_job(config, pool.name)
