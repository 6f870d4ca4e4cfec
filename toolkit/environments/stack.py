"""Environment stacks: ``env-<hash>`` in project ``toolkit-envs``, one per built environment.

The stack holds what the environment is on this machine: for an image, a
``docker.RemoteImage`` built FROM the base image out of a context of host
downloaded wheels (installed with ``pip --no-index`` into
``/opt/toolkit-env``, which a ``.pth`` adds after the base's own
site-packages, so the runner's packages always win); for the process target,
a ``toolkit:Virtualenv`` whose site-packages hold the wheels and whose
``.pth`` adds the caller's packages after them. Destroying the stack removes
the image or the virtualenv. The stack tag ``toolkit:env`` describes the
environment for ``toolkit env ls`` without reading its state.

For a remote target the same stack also holds a ``docker.RegistryImage``
that pushes the built image to the pool's ``image_registry`` (with the pool's
credentials as a Pulumi secret, or the Docker configuration's) and exports
its digest, which is what jobs pull. Destroying the stack deletes the pushed
manifest as far as the registry allows.

Built once: callers hold the environment's lock while they check and build.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pulumi
from pulumi import automation as auto
from pulumi.dynamic import CreateResult, Resource, ResourceProvider
from pydantic import BaseModel

from toolkit import settings, workspace
from toolkit.environments.build_context import build_context
from toolkit.environments.events import Reporter
from toolkit.environments.resolve import wheelhouse
from toolkit.environments.spec import Environment
from toolkit.errors import EnvironmentBuildError, ImagePushError, TeardownError
from toolkit.infra.image_registry import ImageRegistry, digest_reference
from toolkit.workspace import break_stale_lock, ensure_local_backend, remove_stack, workspace_options

ENV_TAG = "toolkit:env"
PUSH_RESOURCE = "pushed"
"""The environment stack's registry image resource (remote targets only)."""
PUSH_ATTEMPTS = 2
"""A failed push is tried once more (the build is kept): registries and the push stream have transient
failures, and a refusal costs a second or two to confirm."""


class EnvTag(BaseModel):
    """What ``toolkit env ls`` shows of an environment stack."""

    hash: str
    kind: str
    reference: str
    base: str
    python: str
    packages: list[str]
    size: int
    created: float


def venvs_dir() -> Path:
    return settings.environments_dir() / "venvs"


def planned_reference(environment: Environment) -> str:
    """What jobs will run once the environment is built: its image, or its virtualenv's interpreter."""
    if environment.kind == "image":
        return environment.image_name
    return str(venvs_dir() / environment.hash / "bin" / "python")


# -- the process target's virtualenv, as a resource ---------------------------------------


class _VirtualenvProvider(ResourceProvider):
    """Creates a virtualenv holding the wheels, layered over the caller's packages; deletes it."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        path = Path(props["path"])
        shutil.rmtree(path, ignore_errors=True)  # a half-built one from an interrupted build
        try:
            subprocess.run([props["base_python"], "-m", "venv", "--without-pip", str(path)], check=True,
                           capture_output=True, text=True)
            python = path / "bin" / "python"
            site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            subprocess.run(
                [props["base_python"], "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
                 "--disable-pip-version-check", "--no-warn-script-location", "--target", site, *props["wheels"]],
                check=True, capture_output=True, text=True,
            )
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(path, ignore_errors=True)
            raise RuntimeError(f"{' '.join(exc.cmd[:4])} ... failed: {exc.stderr.strip()[-800:]}") from None
        lines = [f"import site; site.addsitedir({directory!r})" for directory in props["caller_sites"]]
        (Path(site) / "_toolkit_caller.pth").write_text("\n".join(lines) + "\n")
        return CreateResult(id_=str(path), outs={**props, "python": str(python)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        shutil.rmtree(props["path"], ignore_errors=True)


class Virtualenv(Resource, module="toolkit", name="Virtualenv"):
    """A process-target environment: a virtualenv over the caller's interpreter."""

    python: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(_VirtualenvProvider(), name, {**props, "python": None}, opts)


# -- programs -----------------------------------------------------------------------------


def _registry_provider(registry: ImageRegistry) -> Any:
    """A Docker provider that may push to ``registry``: the pool's credentials (as a Pulumi secret), the
    Docker configuration's login or credential helper for it, or none."""
    import pulumi_docker

    if registry.has_credentials:
        auth = pulumi_docker.ProviderRegistryAuthArgs(
            address=registry.address, username=registry.username, password=pulumi.Output.secret(registry.password())
        )
    elif (config := registry.docker_config_entry()) is not None:
        auth = pulumi_docker.ProviderRegistryAuthArgs(address=registry.address, config_file=str(config))
    else:  # the provider wants an entry for every registry it talks to, even an open one
        auth = pulumi_docker.ProviderRegistryAuthArgs(address=registry.address, auth_disabled=True)
    return pulumi_docker.Provider("registry", registry_auth=[auth])


def _image_program(environment: Environment, context: Path, registry: ImageRegistry | None) -> None:
    import pulumi_docker

    image = pulumi_docker.RemoteImage(
        "image",
        name=environment.image_name,
        build=pulumi_docker.RemoteImageBuildArgs(context=str(context), dockerfile="Dockerfile", remove=True,
                                                 force_remove=True),
        keep_locally=False,
        # The stack is named by the content's hash, so a build's inputs never differ in content, only
        # in the context's temporary path. Replacing on that would delete the old image by its name,
        # which the new one has too: the environment's image would vanish right after its build.
        opts=pulumi.ResourceOptions(ignore_changes=["build"]),
    )
    pulumi.export("image_id", image.image_id)
    if registry is None:
        pulumi.export("reference", environment.image_name)
        return
    assert environment.registry is not None
    pushed = pulumi_docker.RegistryImage(
        PUSH_RESOURCE,
        name=image.name,
        keep_remotely=False,  # destroying the stack deletes the manifest, as far as the registry allows
        triggers={"image_id": image.image_id},  # a rebuilt image is pushed again
        opts=pulumi.ResourceOptions(provider=_registry_provider(registry)),
    )
    pulumi.export("reference", pushed.sha256_digest.apply(lambda digest: digest_reference(environment.registry, digest)))


def _virtualenv_program(environment: Environment, caller_sites: list[str]) -> None:
    venv = Virtualenv(
        "virtualenv",
        {
            "path": str(venvs_dir() / environment.hash),
            "base_python": environment.base,
            "wheels": [str(wheelhouse() / pin.wheel) for pin in environment.pins],
            "caller_sites": caller_sites,
        },
    )
    pulumi.export("reference", venv.python)


# -- stacks -------------------------------------------------------------------------------


@contextmanager
def _workspace() -> Iterator[Path]:
    work_dir = Path(tempfile.mkdtemp(prefix="toolkit-env-"))
    try:
        yield work_dir
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def build(
    environment: Environment, tag: EnvTag, backend_url: str, reporter: Reporter, registry: ImageRegistry | None = None
) -> str:
    """``pulumi up`` the environment's stack (creating it if needed); returns the job's reference.

    A stack whose image or virtualenv vanished (removed by hand) is refreshed
    first, so ``up`` builds it again. With ``registry`` the image is pushed
    there and the reference is its digest (``repo@sha256:...``).
    """
    import site

    ensure_local_backend(backend_url)
    with _workspace() as work_dir:
        context = build_context(environment, work_dir / "context") if environment.kind == "image" else None
        if context is not None:
            program = lambda: _image_program(environment, context, registry)  # noqa: E731
        else:
            sites = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
            program = lambda: _virtualenv_program(environment, sites)  # noqa: E731
        stack = auto.create_or_select_stack(
            environment.stack_name,
            project_name=settings.ENV_PROJECT,
            program=program,
            opts=workspace_options(backend_url, work_dir, project=settings.ENV_PROJECT),
        )
        stack.set_tag(ENV_TAG, tag.model_dump_json())
        started = time.monotonic()
        attempt = 1
        while True:
            reporter.errors.clear()
            push = _PushFailure(reporter)
            try:
                result = _up(stack, push, environment.stack_name, backend_url)
            except auto.errors.CommandError as exc:
                if push.messages and attempt < PUSH_ATTEMPTS:  # the image is built: only the push runs again
                    attempt += 1
                    reporter("building", f"the push failed ({push.messages[-1][-300:]}); trying once more")
                    continue
                raise _build_error(environment, registry, reporter, push, exc) from None
            reporter("built", f"{result.outputs['reference'].value} in {time.monotonic() - started:.1f}s")
            return str(result.outputs["reference"].value)


def _up(stack: auto.Stack, push: _PushFailure, stack_name: str, backend_url: str) -> auto.UpResult:
    try:
        return stack.up(on_event=push.on_event, on_output=lambda _line: None, refresh=True)
    except auto.errors.ConcurrentUpdateError:
        # Builds of one environment are serialised by its lock, so this is the lock file
        # of a build whose process died (Ctrl-C, kill): break it and build.
        if not break_stale_lock(stack_name, backend_url, settings.ENV_PROJECT):
            raise
        return stack.up(on_event=push.on_event, on_output=lambda _line: None, refresh=True)


def _build_error(
    environment: Environment,
    registry: ImageRegistry | None,
    reporter: Reporter,
    push: _PushFailure,
    exc: auto.errors.CommandError,
) -> EnvironmentBuildError:
    if registry is not None and push.messages:
        return ImagePushError(push_failure(environment, registry, "; ".join(push.messages)))
    detail = "; ".join(reporter.errors) or str(exc).strip().splitlines()[-1]
    return EnvironmentBuildError(
        f"building environment {environment.hash} ({environment.kind}) failed: {detail[-1500:]}. "
        f"Its stack {environment.stack_name} stays for inspection; `toolkit env prune` removes it"
    )


class _PushFailure:
    """Keeps the errors of the registry image resource apart (and all errors, for a failed destroy);
    passes engine events on to a reporter."""

    def __init__(self, reporter: Reporter | None = None) -> None:
        self._reporter = reporter
        self.messages: list[str] = []
        self.errors: list[str] = []

    def on_event(self, event: auto.EngineEvent) -> None:
        diagnostic = event.diagnostic_event
        if diagnostic and diagnostic.severity == "error":
            self.errors.append(diagnostic.message.strip())
            if (diagnostic.urn or "").endswith(f"::{PUSH_RESOURCE}"):
                self.messages.append(diagnostic.message.strip())
        if self._reporter is not None:
            self._reporter.on_event(event)


def push_failure(environment: Environment, registry: ImageRegistry, detail: str) -> str:
    """Why a push failed, naming the registry, and what to change."""
    if registry.has_credentials:
        fix = (f"check the user name {registry.username!r} and the password in ${registry.password_env}, and "
               f"that this user may push to {registry.repository!r}")
    else:
        fix = (f"log in with `docker login {registry.host}` (or set username and password_env in the pool's "
               f"image_registry) and check that you may push to {registry.repository!r}")
    ecr = registry.ecr()
    if ecr is not None:
        fix += (f"; ECR needs the repository to exist: `aws ecr create-repository --repository-name {ecr.name} "
                f"--region {ecr.region}`")
    return (
        f"pushing environment {environment.hash} to the pool's image registry {registry.host!r} failed: "
        f"{detail[-800:]}. To fix: {fix}. Nothing of the run was provisioned; the built image stays in stack "
        f"{environment.stack_name} and the next call pushes it again"
    )


@contextmanager
def _selected(name: str, backend_url: str) -> Iterator[auto.Stack]:
    with _workspace() as work_dir:
        yield auto.select_stack(
            name,
            project_name=settings.ENV_PROJECT,
            program=lambda: None,
            opts=workspace_options(backend_url, work_dir, project=settings.ENV_PROJECT),
        )


def destroy(name: str, backend_url: str) -> str | None:
    """Destroy an environment stack (its image or virtualenv, and its pushed image) and remove it.

    A registry may refuse to delete the pushed image (a distribution registry without
    ``storage.delete.enabled``, a caller without delete permission, an immutable repository). Then
    the image is left there, forgotten by the stack, which is destroyed all the same; the returned
    note says what was left, why, and how to allow deletion.
    """
    watch = _PushFailure()
    try:
        with _selected(name, backend_url) as stack:
            note = None
            try:
                stack.destroy(on_output=lambda _line: None, on_event=watch.on_event)
            except auto.errors.CommandError:
                if not watch.messages:
                    raise
                note = _leave_in_registry(stack, "; ".join(watch.messages))
                stack.destroy(on_output=lambda _line: None)
            remove_stack(name, backend_url, Path(stack.workspace.work_dir))
            return note
    except auto.errors.StackNotFoundError:
        return None
    except auto.errors.CommandError as exc:
        text = str(exc).strip()
        detail = "; ".join(watch.errors) or text.rsplit("stderr:", 1)[-1].strip() or text
        raise TeardownError(f"could not destroy environment stack {name}: {detail[-800:]}") from None


def _leave_in_registry(stack: auto.Stack, refusal: str) -> str:
    """Drop the refused registry image from the stack's state (the image stays in the registry)."""
    exported = stack.export_stack()
    deployment = dict(exported.deployment or {})
    resources = list(deployment.get("resources", []))
    pushed = next(r for r in resources if str(r.get("urn", "")).endswith(f"::{PUSH_RESOURCE}"))
    deployment["resources"] = [r for r in resources if r is not pushed]
    stack.import_stack(auto.Deployment(version=exported.version, deployment=deployment))
    outputs = pushed.get("outputs", {})
    image = str(outputs.get("name", "?")).rsplit(":", 1)[0] + "@" + str(outputs.get("sha256Digest", "?"))
    return (
        f"the registry refused to delete {image} ({refusal[-300:]}), so it stays there. A distribution registry "
        "deletes only with `storage.delete.enabled: true` in its configuration (its garbage-collect then frees "
        "the space); ECR, Artifact Registry and ACR need the caller to have delete permission on the repository"
    )


def updates(name: str, backend_url: str) -> int:
    """How many times the stack was updated (each update that created something was a build)."""
    with _selected(name, backend_url) as stack:
        return sum(1 for entry in stack.history() if entry.kind == "update")


def list_stacks(backend_url: str) -> list[tuple[str, EnvTag | None]]:
    """Every environment stack with its tag (None if unreadable)."""
    found: list[tuple[str, EnvTag | None]] = []
    for name, tags in workspace.list_stacks(backend_url, settings.ENV_PROJECT):
        try:
            found.append((name, EnvTag.model_validate_json(tags[ENV_TAG])))
        except (KeyError, ValueError):
            found.append((name, None))
    return found
