"""An environment image's build context: its wheels, the ``.pth`` that puts them on the base's path,
and the Dockerfile that installs them (with no index) on top of the pool's image."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from toolkit.environments.resolve import wheelhouse
from toolkit.environments.spec import ENV_LABEL, Environment

ENV_SITE = "/opt/toolkit-env"
"""Where an environment image's packages live (a ``.pth`` in the base's site-packages names it)."""
PTH_NAME = "toolkit-env.pth"

DOCKERFILE = """\
FROM {base} AS install
USER root
COPY wheels /tmp/toolkit-wheels
RUN python3 -m pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check \\
    --no-warn-script-location --target {site} /tmp/toolkit-wheels/*.whl
FROM {base}
COPY --from=install {site} {site}
COPY {pth} {purelib}/{pth}
ENV PATH=$PATH:{site}/bin
LABEL {label}={hash}
"""


def build_context(environment: Environment, directory: Path) -> Path:
    """The image's build context: the Dockerfile, the ``.pth`` and hard links to the wheels.

    FROM names the base image as the pool does (BuildKit resolves a local image by name, not by
    ID); the environment's hash holds the ID the plan saw, so a rebuilt base gets a new environment.
    """
    wheels = directory / "wheels"
    wheels.mkdir(parents=True)
    for pin in environment.pins:
        source = wheelhouse() / pin.wheel
        try:
            os.link(source, wheels / pin.wheel)
        except OSError:
            shutil.copy2(source, wheels / pin.wheel)
    (directory / PTH_NAME).write_text(ENV_SITE + "\n")
    (directory / "Dockerfile").write_text(
        DOCKERFILE.format(
            base=environment.base, site=ENV_SITE, pth=PTH_NAME, purelib=environment.purelib,
            label=ENV_LABEL, hash=environment.hash,
        )
    )
    return directory
