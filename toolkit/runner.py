"""The job side: ``python -m toolkit.runner --storage URL``.

Fetches the bundle from run storage, refuses it unless digest and signature
check out, calls the function and writes a signed result next to it. Imports
only the standard library, cloudpickle and fsspec so runner images stay small.

A map (``--items N``) runs items of one function bundle: the item whose index
the platform put in the environment variable named by ``--index-env`` (an
Indexed Job's ``JOB_COMPLETION_INDEX``, Cloud Run's ``CLOUD_RUN_TASK_INDEX``),
or, without it, every item this worker manages to claim: ``claims/<i>`` is
created exclusively (``O_EXCL`` locally, a conditional write in object
storage), so each item runs once however many workers share the run.

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
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from toolkit.bundles import (
    CLAIMS_DIR,
    FILES_NAME,
    ITEMS_DIR,
    PYTHON,
    RESULTS_DIR,
    Outcome,
    item_name,
    load_arguments,
    load_call,
    open_envelope,
    open_indexed,
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
AWAIT_SECONDS = 0.5
"""How often ``--await-items`` looks for the other workers' results and for released claims."""


def _runner_error(error_type: str, message: str) -> Outcome:
    return Outcome("runner-error", error_type=error_type, message=message)


Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def execute(bundle: bytes, key: str, source: str, read: Callable[[str], bytes] | None = None) -> Outcome:
    """Verify and run one bundle; every failure becomes an ``Outcome``.

    ``read(name)`` fetches a file next to the bundle (the ``include_files`` archive,
    unpacked into the working directory after it checks out against the header).
    """
    loaded = load(bundle, key, source, read)
    return loaded if isinstance(loaded, Outcome) else call(*loaded)


def load(bundle: bytes, key: str, source: str, read: Callable[[str], bytes] | None = None) -> Call | Outcome:
    """Verify a bundle and load its call, or the ``Outcome`` saying why it cannot run."""
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
        return load_call(payload)
    except Exception as exc:  # noqa: BLE001 - unpickling raises anything
        return _runner_error(
            "toolkit.errors.BundleError",
            f"the job could not load the function ({type(exc).__name__}: {exc}); a module it needs "
            "is probably missing from the job's image: install it there",
        )


def call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
    """Call the user's function; its exception is its outcome, like its value."""
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
    parser.add_argument("--items", type=int, help="a map of this many items: run items, not one call")
    parser.add_argument("--index-env", help="with --items: the variable holding this task's item index (else claim items)")
    parser.add_argument(
        "--await-items",
        action="store_true",
        help="with --items: once nothing is left to claim, stay until every item has a result, claiming "
        "items the client released for a retry (a dead worker's); a primary replica's exit ends its job",
    )
    parser.add_argument("--worker", default="", help="with --items: this worker's name, written into its claims")
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
    if options.items is not None:
        loaded = load(read(BUNDLE_NAME), key, source, read=read)
        storage = _Storage(options.storage, storage_options)
        if options.index_env:
            index = _index_from(options.index_env, options.items)
            storage.mark_started(index)
            indexes: Iterator[int] = iter([index])
        else:
            indexes = storage.claim_all(options.items, options.worker, options.await_items)
        for index in indexes:
            run_item(storage, loaded, key, index)
        return 0
    outcome = execute(read(BUNDLE_NAME), key, source, read=read)
    sys.stdout.flush()
    sys.stderr.flush()
    with _open(options.storage, RESULT_NAME, "wb", storage_options) as handle:
        handle.write(seal_outcome(outcome, key))
    return 0


def _index_from(variable: str, count: int) -> int:
    value = os.environ.get(variable, "")
    if not value.isdigit() or int(value) >= count:
        print(f"toolkit runner: {variable}={value!r} is not an item index below {count}", file=sys.stderr)
        raise SystemExit(3)
    return int(value)


class _Storage:
    """The run's storage as a map's items see it: claims, item bundles, results."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url.rstrip("/")
        self.options = options
        self.local = _local_path(url)

    def read(self, name: str) -> bytes:
        with _open(self.url, name, "rb", self.options) as handle:
            return handle.read()

    def claim(self, indexes: Iterable[int], worker: str) -> Iterator[int]:
        """Each of ``indexes`` no other worker claimed first, in order; the claim names ``worker``.

        Never empty: s3fs writes an empty file with a plain ``touch``, without the
        conditional header that makes the create exclusive.
        """
        body = (worker or f"pid {os.getpid()}").encode()
        for index in indexes:
            try:
                with _open(self.url, f"{CLAIMS_DIR}/{index}", "xb", self.options) as handle:
                    handle.write(body)
            except FileExistsError:
                continue
            yield index

    def claim_all(self, count: int, worker: str, wait: bool) -> Iterator[int]:
        """Claim items in order; with ``wait``, then stay until every item has a result, taking
        any item whose claim the client released (its worker died) for a retry."""
        yield from self.claim(range(count), worker)
        while wait:
            if len(self.names(RESULTS_DIR)) >= count:
                return
            claimed = {int(name) for name in self.names(CLAIMS_DIR) if name.isdigit()}
            released = [index for index in range(count) if index not in claimed]
            if released:
                yield from self.claim(released, worker)
            else:
                time.sleep(AWAIT_SECONDS)

    def names(self, directory: str) -> list[str]:
        """Entry names under ``directory`` (not those being written, which start with '.')."""
        if self.local is not None:
            names = os.listdir(os.path.join(self.local, directory))
        else:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.url, **self.options)
            fs.invalidate_cache(f"{root}/{directory}")
            try:
                names = [path.rsplit("/", 1)[-1] for path in fs.ls(f"{root}/{directory}", detail=False)]
            except FileNotFoundError:
                names = []
        return [name for name in names if not name.startswith(".")]

    def mark_started(self, index: int) -> None:
        """An indexed task's item was not claimed: record that it started (a retried task rewrites it)."""
        with _open(self.url, f"{CLAIMS_DIR}/{index}", "wb", self.options) as handle:
            handle.write(str(os.getpid()).encode())

    def write_result(self, index: int, data: bytes) -> None:
        """Appears whole or not at all: a local file is renamed into place, an object store's PUT is atomic."""
        name = item_name(RESULTS_DIR, index)
        if self.local is None:
            with _open(self.url, name, "wb", self.options) as handle:
                handle.write(data)
            return
        final = os.path.join(self.local, name)
        temporary = os.path.join(self.local, RESULTS_DIR, f".{index}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, final)


def run_item(storage: _Storage, loaded: Call | Outcome, key: str, index: int) -> None:
    """Run item ``index`` of the map with the loaded function and write its signed result."""
    if isinstance(loaded, Outcome):  # the function itself cannot run: every item says why
        outcome = loaded
    else:
        source = f"{storage.url}/{item_name(ITEMS_DIR, index)}"
        try:
            _, payload = open_indexed(storage.read(item_name(ITEMS_DIR, index)), key, "item", source, index)
            args, kwargs = load_arguments(payload)
        except BundleVerificationError as exc:
            outcome = _runner_error("toolkit.errors.BundleVerificationError", str(exc))
        except Exception as exc:  # noqa: BLE001 - unpickling raises anything
            outcome = _runner_error(
                "toolkit.errors.BundleError",
                f"the job could not load the arguments of item {index} ({type(exc).__name__}: {exc})",
            )
        else:
            outcome = call(loaded[0], args, kwargs)
    sys.stdout.flush()
    sys.stderr.flush()
    storage.write_result(index, seal_outcome(outcome, key, index=index))


def _local_path(storage: str) -> str | None:
    scheme, _, path = storage.partition("://")
    if not path:
        return storage
    return path if scheme in ("file", "local") else None


def _open(storage: str, name: str, mode: str, storage_options: dict[str, Any]) -> IO[bytes]:
    """``name`` in the run's storage. A local directory is opened directly: importing fsspec is
    more than half of the runner's start-up, on the critical path of every local run."""
    local = _local_path(storage)
    if local is not None:
        return open(os.path.join(local, name), mode)
    import fsspec

    fs, root = fsspec.core.url_to_fs(storage, **storage_options)
    return fs.open(f"{root}/{name}", mode)


if __name__ == "__main__":
    sys.exit(main())
