"""The bad-input catalogue: each mistake is one clear error, with nothing provisioned or left behind."""

from __future__ import annotations

import json
import threading

import pytest

from tests.leaks import assert_nothing_left
from toolkit import Submitter, WorkPool, process
from toolkit.errors import BundleError, ConfigError, PoolNotFoundError
from toolkit.futures import wait_for_teardowns
from toolkit.pools.registry import PoolRegistry, parse_pool


@pytest.fixture(autouse=True)
def _nothing_left():
    yield
    wait_for_teardowns()
    assert_nothing_left()


@process
def identity(x):
    return x


def test_unpicklable_argument_is_named():
    with pytest.raises(BundleError, match=r"positional argument 0 of identity cannot be pickled \(lock"):
        identity.submit(threading.Lock())


def test_unknown_pool_lists_known_pools_and_how_to_create_one():
    with pytest.raises(PoolNotFoundError) as info:
        process(pool="nope")(print).submit()
    message = str(info.value)
    assert "work pool 'nope' not found" in message and "local-process" in message
    assert "toolkit pool create nope --type TYPE" in message


def test_pool_of_another_type_is_refused():
    with pytest.raises(ConfigError, match=r"pool 'local-docker' runs 'docker' jobs, but identity is decorated with @process"):
        identity.with_options(pool="local-docker").submit(1)


def test_invalid_pool_document_names_the_file(toolkit_home):
    registry = PoolRegistry()
    (toolkit_home / "pools").mkdir(exist_ok=True)
    (toolkit_home / "pools" / "broken.json").write_text('{"name": "broken", "type": "process", "storage": {"mode": "x"}}')
    (toolkit_home / "pools" / "garbled.json").write_text("{not json")
    try:
        with pytest.raises(ConfigError, match=r"pool document .*broken.json is invalid: storage.mode"):
            registry.get("broken")
        with pytest.raises(ConfigError, match=r"pool document .*garbled.json is not valid JSON"):
            registry.get("garbled")
    finally:
        (toolkit_home / "pools" / "broken.json").unlink()
        (toolkit_home / "pools" / "garbled.json").unlink()


def test_template_referencing_an_undefined_variable_is_refused_at_creation():
    template = WorkPool(name="ok", type="process").base_job_template
    template["job_configuration"]["env"] = "{{ enviroment }}"
    document = json.dumps({"name": "bad-template", "type": "process", "base_job_template": template})
    with pytest.raises(ConfigError, match=r"\{\{ enviroment \}\} in 'job_configuration' name no variable"):
        parse_pool(document, "pool.json")


def test_wrong_type_names_variable_type_and_value():
    with pytest.raises(ConfigError, match=r"job variable 'timeout' for pool 'local-process' expects integer, got 'soon' \(str\)"):
        identity.with_options(timeout="soon").submit(1)


def test_storage_credentials_in_a_pool_document_are_refused():
    with pytest.raises(ValueError, match="look like credentials"):
        WorkPool(name="leaky", type="process", storage={"url": "s3://b/p", "mode": "shared-prefix",
                                                         "options": {"secret": "x"}})


@pytest.mark.engine
def test_unpicklable_return_value_is_a_clear_error():
    @process
    def returns_lock():
        import threading

        return threading.Lock()

    with pytest.raises(BundleError, match="returned a lock that cannot be pickled"):
        returns_lock()


@pytest.mark.engine
def test_non_utf8_output_is_kept_readable():
    @process
    def noisy():
        import sys

        sys.stdout.buffer.write(b"caf\xe9 \xff\xfe ok\n")
        sys.stdout.flush()
        return "done"

    with Submitter("local-process") as submitter:
        future = submitter.submit(noisy)
    assert future.result() == "done"
    assert future.logs() == "caf\ufffd \ufffd\ufffd ok\n"
    # valid text (no lone surrogates): it encodes strictly as UTF-8 and survives a JSON document unchanged
    assert future.logs().encode("utf-8", errors="strict") == b"caf\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd ok\n"
    assert json.loads(json.dumps(future.logs(), ensure_ascii=False)) == future.logs()


def test_pool_storage_its_jobs_cannot_reach_is_refused_at_creation():
    document = json.dumps(
        {"name": "k8s", "type": "kubernetes", "storage": {"url": "/srv/runs", "mode": "shared-prefix"}}
    )
    with pytest.raises(ConfigError, match=r"storage '/srv/runs' cannot be reached by kubernetes jobs"):
        parse_pool(document, "k8s.json")
