"""``toolkit.secret``: a value that must only ever travel as a Pulumi secret.

A ``Secret`` survives templating untouched; targets turn it into
``pulumi.Output.secret`` so it is encrypted in state and masked in previews,
and it is refused by the bundler so it never lands in a pickled bundle.
"""

from __future__ import annotations

from typing import Any

from toolkit.nested import any_leaf


class Secret:
    """A string that is masked everywhere except inside the job's environment."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"toolkit.secret() takes a string, got {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The plaintext, for the one place that hands it to Pulumi as a secret."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('[secret]')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("toolkit.Secret", self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self  # immutable; copying must not go through pickling, which is refused

    def __reduce__(self) -> Any:
        raise TypeError(
            "a toolkit.secret() value cannot be pickled into a bundle; pass it through "
            "env={...} or a secret job variable so it travels as a Pulumi secret"
        )


def secret(value: str) -> Secret:
    """Mark ``value`` as secret: ``env={"TOKEN": toolkit.secret("...")}``."""
    return Secret(value)


def mask(value: Any) -> Any:
    """A copy of ``value`` with every ``Secret`` replaced by ``"[secret]"`` (for display)."""
    if isinstance(value, Secret):
        return "[secret]"
    if isinstance(value, dict):
        return {key: mask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def contains_secret(value: Any) -> bool:
    """Whether ``value`` holds a ``Secret`` anywhere inside."""
    return any_leaf(value, lambda item: isinstance(item, Secret))


def mask_as(value: Any, effective: Any) -> Any:
    """``mask(value)``, also hiding what ``effective`` (the merged, validated values) holds as a
    ``Secret`` at the same place: a plain string given for a variable the schema marks secret
    only becomes a ``Secret`` when validated. A dotted key (``env.TOKEN``) is looked up by its path."""
    if isinstance(value, Secret) or isinstance(effective, Secret):
        return "[secret]"
    if isinstance(value, dict):
        inner = effective if isinstance(effective, dict) else {}
        return {key: mask_as(item, _at_path(inner, key)) for key, item in value.items()}
    return mask(value)


def _at_path(values: dict[str, Any], key: str) -> Any:
    if key in values or "." not in key:
        return values.get(key)
    found: Any = values
    for part in key.split("."):
        found = found.get(part) if isinstance(found, dict) else None
    return found
