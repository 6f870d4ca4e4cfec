"""Bundles and results: cloudpickled payloads in signed envelopes, and the wire layout around them.

The wire layout is what client and job agree on by name: the files in run
storage (``BUNDLE_NAME``, ``RESULT_NAME``, ``FILES_NAME``, a map's directories)
and the job's environment variables (``RUN_KEY_ENV``, ``STORAGE_OPTIONS_ENV``).

The client pickles ``(fn, args, kwargs)``; the job pickles the outcome. Both
travel through storage that other parties may be able to write, so each is an
envelope of one JSON header line + payload. The header carries the payload's
sha256 and an HMAC-SHA256 over the header made with a per-run key that reaches
the job only as a Pulumi secret. Nothing is unpickled before both check out.

This module runs inside jobs: standard library and cloudpickle only.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle

from toolkit.errors import BundleError, BundleVerificationError, RemoteError, RuntimeMismatchError

if TYPE_CHECKING:  # the job's start imports no more than it uses (pathlib only with include_files)
    from pathlib import Path

MAGIC = b"TKB1\n"
BUNDLE_NAME = "bundle.tkb"
"""The run's signed call (function and arguments; for a map, the function) in run storage."""
RESULT_NAME = "result.tkb"
"""The signed outcome the runner writes next to the bundle."""
RUN_KEY_ENV = "TOOLKIT_RUN_KEY"
"""Where the job finds the run's signing key: only ever from a platform secret (or the secrets file)."""
STORAGE_OPTIONS_ENV = "TOOLKIT_STORAGE_OPTIONS"
"""The pool's fsspec options for run storage, as JSON (never credentials)."""
FILES_NAME = "files.tar.gz"
"""The ``include_files`` archive, next to the bundle in run storage; the bundle's signed
header carries its sha256 under ``files``."""
ITEMS_DIR = "items"
"""A map's per-item bundles in run storage: ``items/<index>.tkb``, each signed with its index."""
RESULTS_DIR = "results"
"""A map's per-item results: ``results/<index>.tkb``, each signed with its index."""
CLAIMS_DIR = "claims"
"""A map's claim markers: ``claims/<index>`` exists once a worker (or indexed task) took the item."""
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_PICKLE_LOCK = threading.Lock()
"""cloudpickle's by-value registry is global; concurrent submissions must not interleave."""


def _sign(key: str, header: dict[str, Any]) -> str:
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()


def seal(kind: str, payload: bytes, key: str, **fields: Any) -> bytes:
    """Wrap ``payload`` in a signed envelope of ``kind`` ('bundle' or 'result')."""
    header = {"kind": kind, "python": PYTHON, "digest": hashlib.sha256(payload).hexdigest(), **fields}
    header["signature"] = _sign(key, header)
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def open_envelope(data: bytes, key: str, kind: str, source: str) -> tuple[dict[str, Any], bytes]:
    """Verify an envelope and return ``(header, payload)``; never unpickles anything."""
    if not data.startswith(MAGIC):
        raise BundleVerificationError(f"{source} is not a toolkit {kind} (bad magic); refusing to load it")
    line_end = data.find(b"\n", len(MAGIC))
    if line_end < 0:
        raise BundleVerificationError(f"{source} is truncated; refusing to load it")
    try:
        header = json.loads(data[len(MAGIC) : line_end])
    except ValueError:
        raise BundleVerificationError(f"{source} has a corrupt header; refusing to load it") from None
    payload = data[line_end + 1 :]
    signature = header.pop("signature", "")
    if header.get("kind") != kind:
        raise BundleVerificationError(f"{source} is a {header.get('kind')!r}, expected a {kind!r}")
    if not hmac.compare_digest(_sign(key, header), str(signature)):
        raise BundleVerificationError(
            f"{source} failed its signature check (tampered with, or signed with another run's key); "
            "it was not unpickled"
        )
    if not hmac.compare_digest(hashlib.sha256(payload).hexdigest(), str(header.get("digest"))):
        raise BundleVerificationError(f"{source} failed its sha256 digest check; it was not unpickled")
    return header, payload


def unpack_files(data: bytes, expected: dict[str, Any], destination: Path, source: str) -> int:
    """Check the ``include_files`` archive against the bundle's signed header, then unpack it.

    Only regular files and directories with relative paths inside
    ``destination`` are written, and none over an existing file; returns the
    number of files. Raises ``BundleVerificationError`` before writing anything
    when the archive is not the one the caller signed.
    """
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), str(expected.get("digest"))):
        raise BundleVerificationError(
            f"{source} does not match the digest in the bundle's signed header (tampered with or truncated); "
            "refusing to unpack it"
        )
    import tarfile  # only a call with include_files needs it, and it is a tenth of the runner's imports

    root = destination.resolve()
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = archive.getmembers()
        for member in members:
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or (target != root and root not in target.parents):
                raise BundleVerificationError(f"{source} holds {member.name!r}, which may not be unpacked")
            if member.isfile() and target.exists():
                raise BundleError(f"include_files would overwrite {target} in the job's working directory")
        for member in members:
            target = root / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = archive.extractfile(member)
            assert handle is not None
            with open(target, "xb") as out:
                out.write(handle.read())
            os.chmod(target, (member.mode & 0o755) | 0o600)
            count += 1
    return count


def library_roots() -> tuple[str, ...]:
    """Directories of installed code (stdlib, site-packages): a module outside them is the user's own."""
    import site  # the client's side only: jobs never look for local packages
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"], sys.prefix, sys.base_prefix}
    roots.update(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str):
        roots.add(user)
    return tuple(sorted(root for root in roots if root))


def local_packages() -> set[str]:
    """Top-level packages loaded from outside the interpreter's libraries (the user's code).

    The job can't import these (it has only its image's libraries), so they go
    by value. ``toolkit`` itself is installed in every runner image.
    """
    roots = library_roots()
    local: set[str] = set()
    for name, module in sys.modules.copy().items():  # copy() is atomic; other threads import meanwhile
        top = name.partition(".")[0]
        path = getattr(module, "__file__", None)
        if not path or top in ("__main__", "toolkit", "cloudpickle") or top in local:
            continue
        if not path.startswith(roots) and top in sys.modules:
            local.add(top)
    return local


def item_name(directory: str, index: int) -> str:
    """``items/7.tkb``, ``results/7.tkb``: where item ``index`` of a map lives in run storage."""
    return f"{directory}/{index}.tkb"


@contextmanager
def pickling_by_value(packages: set[str] | None = None) -> Iterator[None]:
    """Pickle the user's own modules (``packages``, default: found now) by value inside the block.

    Holds the lock that keeps concurrent submissions from interleaving their registrations.
    """
    packages = local_packages() if packages is None else packages
    with _PICKLE_LOCK:
        registered = []
        for package in sorted(packages):
            try:
                cloudpickle.register_pickle_by_value(sys.modules[package])
                registered.append(package)
            except (ValueError, KeyError):
                continue
        try:
            yield
        finally:
            for package in registered:
                cloudpickle.unregister_pickle_by_value(sys.modules[package])


def dump_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """cloudpickle ``(fn, args, kwargs)``, the user's own modules by value.

    On failure, names the argument that cannot be pickled.
    """
    with pickling_by_value():
        try:
            return cloudpickle.dumps((fn, args, kwargs))
        except Exception as exc:  # noqa: BLE001 - pickling raises anything
            raise BundleError(_explain_unpicklable(fn, args, kwargs, exc)) from exc


def dump_arguments(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """cloudpickle one map item's ``(args, kwargs)``; call inside ``pickling_by_value``.

    On failure, names the argument that cannot be pickled.
    """
    try:
        return cloudpickle.dumps((args, kwargs))
    except Exception as exc:  # noqa: BLE001 - pickling raises anything
        raise BundleError(_explain_unpicklable(fn, args, kwargs, exc)) from exc


def load_arguments(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return cloudpickle.loads(payload)


def _explain_unpicklable(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], error: Exception) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    candidates: list[tuple[str, Any]] = [(f"the function {name}", fn)]
    candidates += [(f"positional argument {i} of {name}", value) for i, value in enumerate(args)]
    candidates += [(f"argument {key!r} of {name}", value) for key, value in kwargs.items()]
    for label, value in candidates:
        try:
            cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001
            return (
                f"{label} cannot be pickled ({type(value).__name__}: {type(exc).__name__}: {exc}). "
                "Objects such as connections, locks and open files must be created inside the function"
            )
    return f"the call to {name} cannot be pickled: {type(error).__name__}: {error}"


def load_call(payload: bytes) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    return cloudpickle.loads(payload)


@dataclass
class Outcome:
    """What the job produced: a value, an exception, or a runner-level failure."""

    kind: str  # "value" | "error" | "runner-error"
    payload: bytes = b""
    error_type: str = ""
    message: str = ""
    traceback: str = ""


def outcome_of_value(value: Any) -> Outcome:
    try:
        return Outcome("value", cloudpickle.dumps(value))
    except Exception as exc:  # noqa: BLE001
        return Outcome(
            "runner-error",
            error_type="toolkit.errors.BundleError",
            message=f"the function returned a {type(value).__name__} that cannot be pickled "
            f"({type(exc).__name__}: {exc}); return plain data instead",
        )


def outcome_of_exception(exc: BaseException) -> Outcome:
    import traceback  # only a call that raised needs it

    text = "".join(traceback.format_exception(exc))
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        payload = cloudpickle.dumps(exc)
        cloudpickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
    except Exception:  # noqa: BLE001
        payload = b""
    return Outcome("error", payload, kind, str(exc), text)


def seal_outcome(outcome: Outcome, key: str, **fields: Any) -> bytes:
    """A signed result; a map item's carries its ``index`` so results cannot be swapped."""
    return seal(
        "result",
        outcome.payload,
        key,
        outcome=outcome.kind,
        error_type=outcome.error_type,
        message=outcome.message,
        traceback=outcome.traceback,
        **fields,
    )


def open_indexed(data: bytes, key: str, kind: str, source: str, index: int) -> tuple[dict[str, Any], bytes]:
    """``open_envelope`` for a map item's bundle or result: its signed index must be ``index``."""
    header, payload = open_envelope(data, key, kind, source)
    if header.get("index") != index:
        raise BundleVerificationError(
            f"{source} is signed for item {header.get('index')!r}, not item {index}; refusing to load it"
        )
    return header, payload


def unseal_result(data: bytes, key: str, source: str, index: int | None = None) -> Any:
    """Verify a result envelope, then return the value or raise the remote exception.

    The remote exception keeps its type; the remote traceback is attached as a
    note and as ``remote_traceback``. ``index``: the map item the result must be signed for.
    """
    if index is None:
        header, payload = open_envelope(data, key, "result", source)
    else:
        header, payload = open_indexed(data, key, "result", source, index)
    outcome = header.get("outcome")
    if outcome == "value":
        return cloudpickle.loads(payload)
    remote_tb = header.get("traceback", "")
    if outcome == "error":
        if payload:
            exc = cloudpickle.loads(payload)
            if isinstance(exc, BaseException):
                exc.remote_traceback = remote_tb  # type: ignore[attr-defined]
                exc.add_note("\nRemote traceback:\n" + remote_tb)
                raise exc
        raise RemoteError(header.get("error_type", "Exception"), header.get("message", ""), remote_tb)
    message = header.get("message", "the job failed before calling the function")
    error_type = header.get("error_type", "")
    if error_type.endswith("RuntimeMismatchError"):
        raise RuntimeMismatchError(message)
    if error_type.endswith("BundleVerificationError"):
        raise BundleVerificationError(message)
    raise BundleError(message)
