"""Bundles and results: signed envelopes that are never unpickled unless they verify."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

import cloudpickle
import pytest

from toolkit import bundles, runner
from toolkit.errors import BundleError, BundleVerificationError, RemoteError, RuntimeMismatchError
from toolkit.secretvalues import Secret

KEY = "k" * 64


class _Bomb:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_bundle_runs_and_its_result_round_trips():
    envelope = bundles.seal("bundle", bundles.dump_call(divmod, (17, 5), {}), KEY)
    outcome = runner.execute(envelope, KEY, "test")
    assert bundles.unseal_result(bundles.seal_outcome(outcome, KEY), KEY, "test") == (3, 2)


def _tamper(envelope: bytes, payload: bytes) -> bytes:
    header_end = envelope.index(b"\n", len(bundles.MAGIC))
    return envelope[: header_end + 1] + payload


def test_tampered_bundle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    envelope = bundles.seal("bundle", bundles.dump_call(print, (), {}), KEY)
    outcome = runner.execute(_tamper(envelope, pickle.dumps(_Bomb(marker))), KEY, "bundle.tkb")
    assert outcome.kind == "runner-error" and outcome.error_type.endswith("BundleVerificationError")
    assert "sha256 digest" in outcome.message
    assert not marker.exists()


def test_bundle_signed_with_another_key_is_refused(tmp_path):
    marker = tmp_path / "unpickled"
    envelope = bundles.seal("bundle", pickle.dumps(_Bomb(marker)), "another-run-key")
    outcome = runner.execute(envelope, KEY, "bundle.tkb")
    assert outcome.error_type.endswith("BundleVerificationError") and "signature" in outcome.message
    assert not marker.exists()


def test_tampered_result_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    good = bundles.seal_outcome(bundles.outcome_of_value(42), KEY)
    with pytest.raises(BundleVerificationError, match="digest"):
        bundles.unseal_result(_tamper(good, pickle.dumps(_Bomb(marker))), KEY, "result.tkb")
    forged = bundles.seal_outcome(bundles.Outcome("value", pickle.dumps(_Bomb(marker))), "attacker-key")
    with pytest.raises(BundleVerificationError, match="signature"):
        bundles.unseal_result(forged, KEY, "result.tkb")
    assert not marker.exists()


def test_garbage_is_refused():
    with pytest.raises(BundleVerificationError, match="bad magic"):
        bundles.open_envelope(b"\x80\x04junk", KEY, "bundle", "x")


def test_remote_exception_keeps_type_and_carries_remote_traceback():
    def fail(x):
        raise ValueError(f"bad value {x}")

    envelope = bundles.seal("bundle", bundles.dump_call(fail, (3,), {}), KEY)
    result = bundles.seal_outcome(runner.execute(envelope, KEY, "b"), KEY)
    with pytest.raises(ValueError, match="bad value 3") as info:
        bundles.unseal_result(result, KEY, "r")
    assert "in fail" in info.value.remote_traceback
    assert any("Remote traceback" in note for note in info.value.__notes__)


def test_unpicklable_exception_becomes_remote_error_with_type_name():
    class Weird(Exception):
        def __reduce__(self):
            raise TypeError("no")

    outcome = bundles.outcome_of_exception(Weird("boom"))
    with pytest.raises(RemoteError, match="Weird: boom") as info:
        bundles.unseal_result(bundles.seal_outcome(outcome, KEY), KEY, "r")
    assert "Weird" in info.value.remote_traceback


def test_unpicklable_argument_is_named():
    import threading

    with pytest.raises(BundleError, match=r"argument 'lock' of .*cannot be pickled .*lock"):
        bundles.dump_call(print, (1,), {"lock": threading.Lock()})


def test_secret_never_goes_into_a_bundle():
    with pytest.raises(BundleError, match="cannot be pickled"):
        bundles.dump_call(print, (Secret("x"),), {})


def test_unpicklable_return_value_is_a_clear_error():
    import threading

    outcome = bundles.outcome_of_value(threading.Lock())
    with pytest.raises(BundleError, match="returned a lock that cannot be pickled"):
        bundles.unseal_result(bundles.seal_outcome(outcome, KEY), KEY, "r")


def test_python_version_mismatch_is_a_clear_error():
    import hashlib
    import json

    # seal() stamps the client's version; sign one that says 3.7 to stand for another client
    payload = bundles.dump_call(print, (), {})
    header = {"kind": "bundle", "python": "3.7", "digest": hashlib.sha256(payload).hexdigest()}
    header["signature"] = bundles._sign(KEY, header)
    envelope = bundles.MAGIC + json.dumps(header).encode() + b"\n" + payload
    result = bundles.seal_outcome(runner.execute(envelope, KEY, "b"), KEY)
    with pytest.raises(RuntimeMismatchError, match=f"Python 3.7 but the job runs Python {sys.version_info[0]}.{sys.version_info[1]}"):
        bundles.unseal_result(result, KEY, "r")


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_local_modules_are_pickled_by_value(tmp_path, monkeypatch):
    module = tmp_path / "user_code_mod.py"
    module.write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_code_mod

    payload = bundles.dump_call(user_code_mod.triple, (Point(1, 2),), {})
    del sys.modules["user_code_mod"]
    monkeypatch.syspath_prepend("/nonexistent")
    sys.path.remove(str(tmp_path))
    fn, args, _ = cloudpickle.loads(payload)  # the module is not importable any more
    assert fn(2) == 6 and args[0] == Point(1, 2)
