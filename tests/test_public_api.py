"""The public surface the design fixes, and the dependency rule that keeps job images small."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import toolkit


def test_design_names_are_importable_from_the_package():
    from toolkit import (  # noqa: F401 - the import is the test
        Plan,
        RunFuture,
        Submitter,
        WorkPool,
        azure_container_instance,
        cloud_run,
        docker,
        ecs,
        kubernetes,
        process,
        secret,
        vertex_ai,
    )

    assert sorted(toolkit.__all__) == sorted(set(toolkit.__all__))
    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None


def test_the_runner_imports_only_the_standard_library_cloudpickle_and_fsspec():
    probe = (
        "import sys, toolkit.runner; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pulumi', 'pydantic', 'grpc', 'rich', 'typer') "
        "or m.startswith(('toolkit.infra', 'toolkit.engine', 'toolkit.decorators'))); print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_runners_start_imports_nothing_a_single_call_on_the_signed_path_does_not_use():
    """Without ``site`` (whose editable-install finder and ``.pth`` files import more than a job image's
    interpreter does): no storage driver, and neither pathlib nor tarfile (include_files) nor the client's
    site/sysconfig search for local packages."""
    import cloudpickle

    packages = str(Path(cloudpickle.__file__).parents[1])
    probe = "import sys, toolkit.runner; print(sorted(sys.modules))"
    env = {"PYTHONPATH": os.pathsep.join([str(Path(toolkit.__file__).parents[1]), packages])}
    result = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True, env=env)
    imported = set(ast.literal_eval(result.stdout))
    assert "cloudpickle" in imported
    assert not imported & {"fsspec", "pathlib", "tarfile", "sysconfig", "site", "http.client"}, sorted(imported)


def test_the_runner_image_is_rebuilt_when_any_module_the_job_imports_changes():
    """``JOB_MODULES`` is what the runner image's content hash covers: every toolkit module a job imports."""
    from toolkit.toolchain.runner_image import JOB_MODULES

    probe = "import sys, toolkit.runner, toolkit.gcp_secret_env; print(sorted(m for m in sys.modules if m.startswith('toolkit')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    imported = {name.removeprefix("toolkit").lstrip(".") or "__init__" for name in ast.literal_eval(result.stdout)}
    assert {f"{name.replace('.', '/')}.py" for name in imported} <= set(JOB_MODULES)


def test_work_pool_name_is_an_alias_of_pool():
    bound = toolkit.process(work_pool_name="local-process")(print)
    assert bound.pool == "local-process"
