"""Typed errors of the toolkit.

Every error says what failed, quotes the offending value with ``!r`` and ends
with what to do, so a user never has to read a stack trace to fix an input.
Pulumi's own typed errors are wrapped, never parsed out of CLI text.
"""

from __future__ import annotations

from typing import Any


class ToolkitError(Exception):
    """Base class of every error raised by the toolkit."""


class ConfigError(ToolkitError, ValueError):
    """Bad user input: job variables, decorator arguments, pool documents.

    Raised before anything is provisioned.
    """


class PoolNotFoundError(ConfigError, LookupError):
    """The named work pool is not in the registry."""


class TemplateError(ConfigError):
    """A base job template is inconsistent (placeholder without variable, bad schema)."""


class PolicyViolationError(ConfigError):
    """A pool's policy pack rejected the call (a mandatory violation); nothing was created.

    ``results`` holds every policy result of the check, advisory ones included.
    """

    def __init__(self, message: str, results: list[Any], changes: list[Any] | None = None) -> None:
        super().__init__(message)
        self.results = results
        self.changes = changes or []


class PoolBusyError(ToolkitError):
    """The pool already runs ``max_concurrent_runs`` calls and the call was submitted with ``block=False``."""


class TargetUnavailableError(ToolkitError):
    """A target's optional SDK or local engine is missing; the message names the fix."""


class ToolchainError(ToolkitError):
    """The Pulumi CLI, a plugin, the Docker engine or the runner image is missing or broken."""


class BundleError(ToolkitError):
    """A function, argument or result could not be pickled or transported."""


class BundleVerificationError(BundleError):
    """A bundle or result failed its digest or signature check; it was not unpickled."""


class RuntimeMismatchError(BundleError):
    """The job's Python version cannot load a bundle made by the client's Python."""


class RequirementError(ConfigError):
    """A job's packages cannot be resolved into a set of wheels for its environment."""


class RequirementNotFoundError(RequirementError, LookupError):
    """A requirement names a distribution the package index does not have."""


class RequirementConflictError(RequirementError):
    """Requirements pin incompatible versions (of each other or of the base image)."""


class NoCompatibleWheelError(RequirementError):
    """A distribution has no wheel for the job's platform and none can be built for it."""


class MissingModuleError(RequirementError):
    """The function imports a module installed neither on the caller's side nor in the job's."""


class IncludeFilesError(ConfigError):
    """``include_files`` matched nothing, too much, something outside the working directory or a secret."""


class ProvisionError(ToolkitError):
    """``pulumi up`` of a run stack failed; the stack has been torn down."""


class EnvironmentBuildError(ProvisionError):
    """Building an environment's image or virtualenv failed; nothing of the run was provisioned."""


class ImagePushError(EnvironmentBuildError):
    """An environment image could not be pushed to the pool's image registry; no run stack exists."""


class JobFailedError(ToolkitError):
    """The job ended without a result (crash, OOM kill, image problem, non-zero exit)."""


class RunCancelledError(ToolkitError):
    """The run was cancelled (``RunFuture.cancel()``, ``toolkit runs cancel`` or Ctrl-C)."""


class RunTimeoutError(ToolkitError, TimeoutError):
    """The job exceeded its ``timeout`` job variable, or ``result(timeout=)`` expired."""


class TeardownError(ToolkitError):
    """A run stack could not be destroyed; ``toolkit gc`` will retry it."""


class RemoteError(ToolkitError):
    """Stands in for a remote exception that could not be pickled back.

    Carries the remote type name and traceback text.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_traceback = remote_traceback
