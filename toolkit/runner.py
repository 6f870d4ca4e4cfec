"""The job side: ``python -m toolkit.runner --storage URL``.

Fetches the bundle from run storage, refuses it unless digest and signature
check out, calls the function and writes a signed result next to it. Imports
only the standard library, cloudpickle and fsspec so runner images stay small.
Storage is reached through the requests the client signed for the job, when it
handed it some, else through fsspec (``toolkit.job_storage``).

A map (``--items N``) runs items of one function bundle: the item whose index
the platform put in the environment variable named by ``--index-env`` (Cloud
Run's ``CLOUD_RUN_TASK_INDEX``), or, without it, every item this worker manages to claim: ``claims/<i>`` is
created exclusively (``O_EXCL`` locally, a conditional write in object
storage), so each item runs once however many workers share the run. A worker
that stays for retries (``--await-items``) takes items still waiting for a claim:
it lists the claims (fsspec), or reads the client's ``control.json`` (signed requests).

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
import time
from collections.abc import Callable, Iterator
from typing import Any

from toolkit.bundles import (
    BUNDLE_NAME,
    FILES_NAME,
    ITEMS_DIR,
    PYTHON,
    RESULT_NAME,
    RUN_KEY_ENV,
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
from toolkit.job_storage import RunStorage, job_storage

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
        import tarfile
        from pathlib import Path  # a call without include_files needs neither

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
    parser.add_argument(
        "--stripe",
        type=_stripe,
        help="with --items: K/P, this worker's number K of P: claim items K, K+P, K+2P ... first (no other "
        "worker starts there), then take what is left from the end",
    )
    options = parser.parse_args(argv)
    if options.secrets:
        load_secrets(options.secrets)
    key = os.environ.pop(RUN_KEY_ENV, None)
    if not key:
        print(f"toolkit runner: {RUN_KEY_ENV} is not set; refusing to run an unverifiable bundle", file=sys.stderr)
        return 3
    storage = job_storage(options.storage, key)
    source = f"{options.storage.rstrip('/')}/{BUNDLE_NAME}"
    if options.items is not None:
        loaded = load(storage.read(BUNDLE_NAME), key, source, read=storage.read)
        worker = options.worker or os.environ.get("HOSTNAME") or f"pid {os.getpid()}"
        if options.index_env:
            index = _index_from(options.index_env, options.items)
            storage.mark_started(index)
            indexes: Iterator[int] = iter([index])
        else:
            indexes = claim_items(storage, options.items, options.worker, options.await_items, options.stripe)
        for index in indexes:
            run_item(storage, loaded, key, index, worker)
        return 0
    outcome = execute(storage.read(BUNDLE_NAME), key, source, read=storage.read)
    sys.stdout.flush()
    sys.stderr.flush()
    storage.write(RESULT_NAME, seal_outcome(outcome, key))
    return 0


def _index_from(variable: str, count: int) -> int:
    value = os.environ.get(variable, "")
    if not value.isdigit() or int(value) >= count:
        print(f"toolkit runner: {variable}={value!r} is not an item index below {count}", file=sys.stderr)
        raise SystemExit(3)
    return int(value)


def _stripe(value: str) -> tuple[int, int]:
    number, _, workers = value.partition("/")
    if not (number.isdigit() and workers.isdigit() and int(number) < int(workers)):
        raise argparse.ArgumentTypeError(f"{value!r} is not K/P with 0 <= K < P")
    return int(number), int(workers)


def claim_items(
    storage: RunStorage, count: int, worker: str, wait: bool, stripe: tuple[int, int] | None = None
) -> Iterator[int]:
    """Claim items in order (with ``stripe``: this worker's own first); with ``wait``, then stay until
    every item has a result, taking any item still waiting (never claimed, or released by the client
    because its worker died) for a retry."""
    body_name = worker or f"pid {os.getpid()}"
    own = range(count) if stripe is None else range(stripe[0], count, stripe[1])
    for index in own:
        if storage.claim(index, body_name):
            yield index
    while wait or stripe is not None:
        waiting = storage.waiting(count)
        if waiting is None or (not waiting and not wait):
            return
        took = False
        for index in _steal_order(waiting, stripe):
            if storage.claim(index, body_name):
                took = True
                yield index
                break  # what waits has changed meanwhile: ask again
        if not took:
            if not wait:
                return
            time.sleep(AWAIT_SECONDS)


def _steal_order(waiting: list[int], stripe: tuple[int, int] | None) -> list[int]:
    """The order to try items others have not claimed: as they come, or, for a striped worker, from the
    end (the owners work from the front), each worker starting at its own place so few collide."""
    if stripe is None or not waiting:
        return waiting
    backwards = waiting[::-1]
    start = stripe[0] * len(backwards) // stripe[1]
    return backwards[start:] + backwards[:start]


def run_item(storage: RunStorage, loaded: Call | Outcome, key: str, index: int, worker: str = "") -> None:
    """Run item ``index`` of the map with the loaded function and write its signed result.

    The result's header also says which worker ran the item and when (the dashboard's Gantt).
    """
    started = time.time()
    if isinstance(loaded, Outcome):  # the function itself cannot run: every item says why
        outcome = loaded
    else:
        name = item_name(ITEMS_DIR, index)
        try:
            _, payload = open_indexed(storage.read(name), key, "item", name, index)
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
    sealed = seal_outcome(outcome, key, index=index, worker=worker, started=started, finished=time.time())
    storage.write_result(index, sealed)


if __name__ == "__main__":
    sys.exit(main())
