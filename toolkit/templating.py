"""Base job templates: layering job variables, validating them, filling placeholders.

A base job template is ``{"job_configuration": {...}, "variables": <JSON schema>}``
(the shape of Prefect work pools). Rules, enforced here and nowhere else:

* Precedence, lowest first: the schema's defaults (the pool's defaults) <
  decorator kwargs < ``with_options`` < ``Submitter.submit(job_variables=)``.
  Mapping-typed variables (``env``, ``labels`` ...) merge key by key; everything
  else is replaced. ``env.FOO=...`` sets one key of the ``env`` mapping.
* Overrides are validated against the variables schema before anything is
  provisioned: an unknown name lists the valid ones and the closest match; a
  wrong type names the variable, the expected type and the value given.
* A value that is exactly ``{{ name }}`` takes the typed value; ``{{ name }}``
  inside a longer string is interpolated; a placeholder with no value removes
  its key. Unlike Prefect, a placeholder naming no variable is an error.
* ``customizations`` (a JSON-6902 patch list) applies last.

``render_job`` renders for a target: the path every job variable takes, from
``preparation.prepare`` to the target's ``parse_job``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jsonpatch
import jsonschema

from toolkit import retries
from toolkit.errors import ConfigError, TemplateError
from toolkit.infra.base import Target
from toolkit.infra.synonyms import Synonym
from toolkit.secretvalues import Secret

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w\-]*)\s*\}\}")
"""``{{ name }}``; whitespace inside the braces is optional."""

RUNTIME_PLACEHOLDERS = frozenset({"run_id", "pool_name", "function_name"})
"""Filled by the engine for every run; usable in any template without a variable."""

_REMOVE = object()
"""Marks a key whose placeholder had no value: the key is dropped."""


def placeholders(obj: Any) -> set[str]:
    """Every placeholder name used anywhere in ``obj``."""
    found: set[str] = set()
    if isinstance(obj, str):
        found.update(PLACEHOLDER.findall(obj))
    elif isinstance(obj, Mapping):
        for value in obj.values():
            found |= placeholders(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= placeholders(value)
    return found


def check_template(template: Mapping[str, Any], where: str) -> None:
    """Fail if the template is not well formed (run at pool creation and preview).

    Checks the shape, that ``variables`` is a valid JSON schema, and that every
    placeholder names a variable or a runtime value.
    """
    if not isinstance(template, Mapping) or set(template) - {"job_configuration", "variables"}:
        raise TemplateError(
            f"{where}: a base job template is an object with exactly the keys "
            f"'job_configuration' and 'variables'; got {sorted(template) if isinstance(template, Mapping) else type(template).__name__!r}"
        )
    config = template.get("job_configuration")
    schema = template.get("variables")
    if not isinstance(config, Mapping):
        raise TemplateError(f"{where}: 'job_configuration' must be an object")
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise TemplateError(f"{where}: 'variables' must be a JSON schema of type 'object'")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(part) for part in exc.path) or "(root)"
        raise TemplateError(
            f"{where}: 'variables' is not a valid JSON schema at {path}: {exc.message}. "
            "Fix the schema (see https://json-schema.org/draft/2020-12)"
        ) from None
    names = set(schema.get("properties", {}))
    unknown = sorted(placeholders(config) - names - RUNTIME_PLACEHOLDERS)
    if unknown:
        raise TemplateError(
            f"{where}: placeholder(s) {', '.join('{{ ' + u + ' }}' for u in unknown)} in "
            f"'job_configuration' name no variable. Declare them under 'variables.properties' "
            f"or remove them. Variables: {', '.join(sorted(names)) or '(none)'}"
        )


def merge_layers(schema: Mapping[str, Any], layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge override layers, lowest precedence first (the schema's defaults go under all)."""
    properties = schema.get("properties", {})
    merged: dict[str, Any] = {
        name: copy.deepcopy(prop["default"]) for name, prop in properties.items() if "default" in prop
    }
    for layer in layers:
        for key, value in _expand_dotted(layer, properties).items():
            if _is_mapping_variable(properties.get(key)) and isinstance(value, Mapping):
                base = merged.get(key)
                merged[key] = {**(base if isinstance(base, Mapping) else {}), **value}
            else:
                merged[key] = value
    return merged


def _expand_dotted(layer: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """``{"env.FOO": "1"}`` -> ``{"env": {"FOO": "1"}}`` for mapping-typed variables."""
    expanded: dict[str, Any] = {}
    for key, value in layer.items():
        head, dot, rest = key.partition(".")
        if dot and head in properties and _is_mapping_variable(properties[head]) and rest:
            expanded.setdefault(head, {})
            if not isinstance(expanded[head], dict):
                raise ConfigError(f"job variable {head!r} is given both whole and as {key!r}; use one form")
            expanded[head][rest] = value
        else:
            if key in expanded and isinstance(expanded[key], dict) and isinstance(value, Mapping):
                expanded[key].update(value)
            else:
                expanded[key] = value
    return expanded


def _is_mapping_variable(prop: Mapping[str, Any] | None) -> bool:
    if not prop:
        return False
    types = {prop.get("type")} | {option.get("type") for option in prop.get("anyOf", [])}
    return "object" in types


def validate_variables(
    values: Mapping[str, Any],
    schema: Mapping[str, Any],
    pool_name: str,
    synonyms: Mapping[str, Synonym] | None = None,
) -> dict[str, Any]:
    """Check merged job variables against the pool's variables schema.

    ``synonyms`` (the target's table of other names) make the suggestion for
    an unknown name exact: ``memory`` on docker suggests ``mem_limit``.
    Returns the values with schema-secret variables wrapped in ``Secret``.
    """
    properties = schema.get("properties", {})
    unknown = sorted(set(values) - set(properties))
    if unknown:
        raise ConfigError(_unknown_variable(unknown[0], properties, synonyms or {}, pool_name))
    checkable = {key: _unwrap_for_validation(value) for key, value in values.items() if value is not None}
    validator = jsonschema.Draft202012Validator(
        {**schema, "required": [r for r in schema.get("required", []) if r not in values or values[r] is not None]}
    )
    errors = sorted(validator.iter_errors(checkable), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe_error(errors[0], properties, pool_name))
    return {key: _wrap_secret(value, properties.get(key, {})) for key, value in values.items()}


def _unknown_variable(
    name: str, properties: Mapping[str, Any], synonyms: Mapping[str, Synonym], pool_name: str
) -> str:
    head, dot, rest = name.partition(".")  # 'evn.X' is meant as 'env.X'
    close = difflib.get_close_matches(head, [*properties, *synonyms], n=1, cutoff=0.6)
    match = head if head in synonyms else (close[0] if close else None)
    hint = ""
    if match in properties:
        hint = f" Did you mean {match + dot + rest!r}?"
    elif match is not None:
        synonym = synonyms[match]
        if synonym.ours in properties:
            hint = f" Did you mean {synonym.ours + dot + rest!r}?" + (f" ({synonym.why})" if synonym.why else "")
        else:
            hint = f" {synonym.describe(match)}."
    return f"unknown job variable {name!r} for pool {pool_name!r}.{hint} Valid: {', '.join(sorted(properties))}"


def _unwrap_for_validation(value: Any) -> Any:
    """Secrets validate as the strings they hold, without being unwrapped for good."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return {key: _unwrap_for_validation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap_for_validation(item) for item in value]
    return value


def _wrap_secret(value: Any, prop: Mapping[str, Any]) -> Any:
    marked = prop.get("writeOnly") or prop.get("format") == "password"
    if marked and isinstance(value, str):
        return Secret(value)
    return value


def _describe_error(error: jsonschema.ValidationError, properties: Mapping[str, Any], pool_name: str) -> str:
    path = list(error.absolute_path)
    if not path:
        if error.validator == "required":
            return f"job variable missing for pool {pool_name!r}: {error.message}. Pass it to the decorator or submit()"
        return f"job variables for pool {pool_name!r} are invalid: {error.message}"
    variable = ".".join(str(part) for part in path)
    given = error.instance
    if isinstance(given, str) and error.validator != "type":
        given = "[secret]" if properties.get(str(path[0]), {}).get("writeOnly") else given
    expected = _expected(error)
    if error.validator == "enum":
        fix = "Pass one of the pool's allowed values"
    elif error.validator in _BOUNDS:
        fix = "Pass a value within the pool's bound"
    else:
        fix = "Pass a value of that type"
    return (
        f"job variable {variable!r} for pool {pool_name!r} expects {expected}, "
        f"got {given!r} ({type(given).__name__}). {fix}"
    )


_BOUNDS = {
    "maximum": "at most {}",
    "minimum": "at least {}",
    "exclusiveMaximum": "less than {}",
    "exclusiveMinimum": "more than {}",
    "maxLength": "at most {} characters",
    "minLength": "at least {} characters",
    "maxItems": "at most {} items",
    "minItems": "at least {} items",
    "multipleOf": "a multiple of {}",
    "pattern": "a string matching {!r}",
    "const": "exactly {!r}",
}
"""Schema bounds a pool sets on its variables, phrased as the bound itself ("at most 64 (maximum)")."""


def _expected(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator in ("type", "anyOf", "oneOf"):
        types: list[str] = []
        for option in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
            kind = option.get("type")
            if isinstance(kind, list):
                types.extend(kind)
            elif kind:
                types.append(kind)
            if "enum" in option:
                types.append("one of " + ", ".join(repr(v) for v in option["enum"]))
        return " or ".join(dict.fromkeys(t for t in types if t != "null")) or error.message
    if error.validator == "enum":
        return "one of " + ", ".join(repr(v) for v in error.validator_value) + " (enum)"
    if error.validator in _BOUNDS:
        return _BOUNDS[str(error.validator)].format(error.validator_value) + f" ({error.validator})"
    return f"a value matching {error.validator} {error.validator_value!r} ({error.message})"


def fill(config: Any, values: Mapping[str, Any]) -> Any:
    """Fill placeholders in ``config`` from ``values`` (typed, interpolated or removed)."""
    result = _fill(config, values)
    return {} if result is _REMOVE else result


def _fill(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        return _fill_string(node, values)
    if isinstance(node, Mapping):
        out = {}
        for key, item in node.items():
            filled = _fill(item, values)
            if filled is not _REMOVE:
                out[key] = filled
        return out
    if isinstance(node, list):
        return [filled for filled in (_fill(item, values) for item in node) if filled is not _REMOVE]
    return node


def _fill_string(text: str, values: Mapping[str, Any]) -> Any:
    whole = PLACEHOLDER.fullmatch(text.strip())
    if whole:
        value = values.get(whole.group(1))
        return _REMOVE if value is None else copy.deepcopy(value)
    names = PLACEHOLDER.findall(text)
    if not names:
        return text
    if any(values.get(name) is None for name in names):
        return _REMOVE
    if any(isinstance(values[name], Secret) for name in names):
        raise TemplateError(
            f"secret value cannot be interpolated into {text!r}; use the placeholder as the whole value"
        )
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)


def apply_customizations(config: dict[str, Any], patches: Any, root: str, pool_name: str) -> dict[str, Any]:
    """Apply a JSON-6902 patch list to the part of ``config`` at ``root`` (a JSON pointer)."""
    if not patches:
        return config
    if not isinstance(patches, list) or not all(isinstance(p, Mapping) and "op" in p for p in patches):
        raise ConfigError(
            f"'customizations' for pool {pool_name!r} must be a JSON-6902 patch list, e.g. "
            '[{"op": "add", "path": "/spec/x", "value": 1}]; got ' + repr(patches)
        )
    pointer = jsonpatch.JsonPointer(root) if root else None
    target = pointer.resolve(config) if pointer else config
    try:
        patched = jsonpatch.apply_patch(target, patches)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise ConfigError(
            f"'customizations' for pool {pool_name!r} does not apply to the job at {root or '/'}: {exc}. "
            "Check each patch path against `toolkit preview` output"
        ) from None
    if pointer is None:
        return patched
    return pointer.set(copy.deepcopy(config), patched, inplace=False)


def render(
    template: Mapping[str, Any],
    layers: Iterable[Mapping[str, Any]],
    runtime: Mapping[str, Any],
    pool_name: str,
    customization_root: str = "",
    synonyms: Mapping[str, Synonym] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Render a job configuration: merge, validate, fill, customize.

    Returns ``(job_configuration, variables)``; raises ``ConfigError`` on bad input.
    """
    schema = template["variables"]
    merged = merge_layers(schema, layers)
    variables = validate_variables(merged, schema, pool_name, synonyms)
    config = fill(template["job_configuration"], {**variables, **runtime})
    return apply_customizations(config, variables.get("customizations"), customization_root, pool_name), variables


def render_job(
    target: Target,
    template: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]],
    runtime: Mapping[str, Any],
    pool_name: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``render`` for ``target``: its customization root and synonyms, and ``retries`` handed to its own
    retry variable (``Target.native_retries``), if it has one. The one path of a job variable into a job."""
    render_layers = functools.partial(
        render,
        template,
        runtime=runtime,
        pool_name=pool_name,
        customization_root=target.customization_root,
        synonyms=target.synonyms,
    )
    config, variables = render_layers(layers=layers)
    native = target.native_retries and carry_into_native(variables, target.native_retries, pool_name)
    if native:
        config, variables = render_layers(layers=[*layers, native])
    return config, variables


def carry_into_native(variables: Mapping[str, Any], native: str, pool_name: str) -> dict[str, Any] | None:
    """The override layer that hands ``retries`` to a target's own retry variable, or None if none is needed.

    Both set to different non-zero values is ambiguous and an error.
    """
    wanted = int(variables.get(retries.VARIABLE) or 0)
    own = variables.get(native)
    if not wanted:
        return None
    if own not in (None, 0, wanted):
        raise ConfigError(
            f"pool {pool_name!r}: {retries.VARIABLE}={wanted!r} and {native}={own!r} both set how often a job "
            f"that ended without a result runs again; {native} is this target's own name for {retries.VARIABLE}. "
            "Pass one"
        )
    return {native: wanted}
