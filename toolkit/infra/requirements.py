"""Job variables a cloud target cannot run without, checked before anything is provisioned.

A cloud job needs an image from the team's registry (there is no public
toolkit runner image to default to) and, on Azure, a resource group. Their
schema defaults stay empty so a pool's template renders before a platform team
fills them in; a run without them fails here, naming the variable and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolkit.errors import ConfigError


def require(target: str, variables: Mapping[str, Any], pool_name: str, needs: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` for the first variable of ``needs`` (name -> what it must be) left unset."""
    for name, what in needs.items():
        if variables.get(name) in (None, ""):
            raise ConfigError(
                f"pool {pool_name!r} ({target}) needs the job variable {name!r}: {what}. "
                f"Set it in the pool's template or pass {name}=... to the decorator or submit()"
            )
