"""The job side: ``python -m toolkit.runner --storage URL``.

Fetches the bundle from run storage, refuses it unless digest and signature
check out, calls the function and writes a signed result next to it. Imports
only the standard library, cloudpickle and fsspec so runner images stay small.

Exit code 0 means a result was written, whatever the function did (so job
controllers do not retry a user's exception); non-zero means no result could
be written, and the client reports the job's own failure instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from toolkit.bundles import (
    FILES_NAME,
    PYTHON,
    Outcome,
    load_call,
    open_envelope,
    outcome_of_exception,
    outcome_of_value,
    seal_outcome,
    unpack_files,
)
from toolkit.errors import BundleError, BundleVerificationError

BUNDLE_NAME = "bundle.tkb"
RESULT_NAME = "result.tkb"
RUN_KEY_ENV = "TOOLKIT_RUN_KEY"
STORAGE_OPTIONS_ENV = "TOOLKIT_STORAGE_OPTIONS"


def _runner_error(error_type: str, message: str) -> Outcome:
    return Outcome("runner-error", error_type=error_type, message=message)


def execute(bundle: bytes, key: str, source: str, read: Callable[[str], bytes] | None = None) -> Outcome:
    """Verify and run one bundle; every failure becomes an ``Outcome``.

    ``read(name)`` fetches a file next to the bundle (the ``include_files`` archive,
    unpacked into the working directory after it checks out against the header).
    """
    try:
        header, payload = open_envelope(bundle, key, "bundle", source)
    except BundleVerificationError as exc:
        return _runner_error("toolkit.errors.BundleVerificationError", str(exc))
    if header.get("python") != PYTHON:
        return _runner_error(
            "toolkit.errors.RuntimeMismatchError",
            f"the bundle was made by Python {header.get('python')} but the job runs Python {PYTHON}; "
            f"use an image with Python {header.get('python')} (the toolkit runner image matches the "
            "client it was built on) or run the client on the job's Python",
        )
    if header.get("files") and read is not None:
        archive = f"{source.rsplit('/', 1)[0]}/{FILES_NAME}"
        try:
            unpack_files(read(FILES_NAME), header["files"], Path.cwd(), archive)
        except BundleVerificationError as exc:
            return _runner_error("toolkit.errors.BundleVerificationError", str(exc))
        except (OSError, tarfile.TarError, BundleError) as exc:
            return _runner_error("toolkit.errors.BundleError", f"could not unpack include_files: {exc}")
    try:
        fn, args, kwargs = load_call(payload)
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything
        return _runner_error(
            "toolkit.errors.BundleError",
            f"the job could not load the function ({type(exc).__name__}: {exc}); a module it needs "
            "is probably missing from the job's image: install it there",
        )
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the user's exception is the result
        return outcome_of_exception(exc)
    return outcome_of_value(value)


def _terminated(signum: int, _frame: object) -> None:
    """Stop at once on SIGTERM (a cancel): as a container's PID 1, the default action is to ignore it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def load_secrets(path: str) -> None:
    """Put the job's secrets file (run key, secret env values) into ``os.environ``, then delete it.

    Once deleted, nothing the function starts can read the file again; the values
    live only in this process's memory (``/proc/<pid>/environ`` shows the
    environment the process started with, which never held them).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except FileNotFoundError:
        print(
            f"toolkit runner: the secrets file {path} is gone; a job reads it once, so this job was "
            "started twice (a restart policy?). Submit the call again",
            file=sys.stderr,
        )
        raise SystemExit(3) from None
    try:
        os.unlink(path)
    except OSError as exc:
        print(f"toolkit runner: could not delete the secrets file {path} ({exc})", file=sys.stderr)
    os.environ.update(values)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    parser = argparse.ArgumentParser(prog="toolkit.runner", description=__doc__)
    parser.add_argument("--storage", required=True, help="fsspec URL of the run's storage prefix")
    parser.add_argument("--secrets", help="file holding the run key and secret env values (read, then deleted)")
    options = parser.parse_args(argv)
    if options.secrets:
        load_secrets(options.secrets)
    key = os.environ.pop(RUN_KEY_ENV, None)
    if not key:
        print(f"toolkit runner: {RUN_KEY_ENV} is not set; refusing to run an unverifiable bundle", file=sys.stderr)
        return 3
    storage_options = json.loads(os.environ.get(STORAGE_OPTIONS_ENV) or "{}")

    def read(name: str) -> bytes:
        with _open(options.storage, name, "rb", storage_options) as handle:
            return handle.read()

    source = f"{options.storage.rstrip('/')}/{BUNDLE_NAME}"
    outcome = execute(read(BUNDLE_NAME), key, source, read=read)
    sys.stdout.flush()
    sys.stderr.flush()
    with _open(options.storage, RESULT_NAME, "wb", storage_options) as handle:
        handle.write(seal_outcome(outcome, key))
    return 0


def _open(storage: str, name: str, mode: str, storage_options: dict[str, Any]) -> IO[bytes]:
    """``name`` in the run's storage. A local directory is opened directly: importing fsspec is
    more than half of the runner's start-up, on the critical path of every local run."""
    scheme, _, path = storage.partition("://")
    if not path or scheme in ("file", "local"):
        return open(os.path.join(path or storage, name), mode)
    import fsspec

    fs, root = fsspec.core.url_to_fs(storage, **storage_options)
    return fs.open(f"{root}/{name}", mode)


if __name__ == "__main__":
    sys.exit(main())
