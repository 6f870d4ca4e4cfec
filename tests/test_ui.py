"""The dashboard's web app without a browser: what each page and API answer says, and who may ask.

Runs here are real records in the formats the toolkit writes them (a run
record, an audit entry in a ``file://`` backend, a run stack's files with its
gc tag), made without running anything, so paging, merging and the security
rules are checked fast. tests/test_ui_browser.py drives real runs in Chromium.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the dashboard's extra: pip install 'toolkit[ui]'")

from starlette.testclient import TestClient  # noqa: E402

from toolkit import diy_backend, records, settings  # noqa: E402
from toolkit.ahead import STANDBY_FUNCTION  # noqa: E402
from toolkit.backend_store import BackendStore  # noqa: E402
from toolkit.engine import RUN_TAG, RunTag  # noqa: E402
from toolkit.guardrails import history  # noqa: E402
from toolkit.ui import security  # noqa: E402
from toolkit.ui.app import Settings, create_app  # noqa: E402
from toolkit.ui.catalog import CLIENT_DIED, Catalog  # noqa: E402
from toolkit.workspace import owner_tag  # noqa: E402

XSS = "<script>alert(1)</script>"


@pytest.fixture
def backend(tmp_path: Path) -> str:
    url = f"file://{tmp_path / 'state'}"
    diy_backend.ensure_layout(url)
    return url


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOOLKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_record(run_id: str, backend: str, **fields: object) -> records.RunRecord:
    now = time.time()
    record = records.RunRecord(
        run_id=run_id, function=str(fields.pop("function", "cube")), pool=str(fields.pop("pool", "local-process")),
        target="process", stack=f"run-{run_id}", backend_url=backend, created=float(fields.pop("created", now - 5)),
        owner_pid=os.getpid(), owner=str(fields.pop("owner", owner_tag(os.getpid()))), **fields,
    )
    record.save()
    return record


def dead_owner() -> str:
    """The owner tag of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return owner_tag(child.pid) or f"{os.uname().nodename}:{child.pid}:1"


def app_for(backend: str, **settings_: object) -> TestClient:
    catalog = Catalog([backend])
    catalog.refresh()
    return TestClient(create_app(Settings(backends=[backend], **settings_), catalog), base_url="http://127.0.0.1:8765")


def test_runs_page_merges_records_audit_entries_and_live_stacks(home, backend):
    make_record("aaaaaaaaaaa1", backend, state="completed", torn_down=True, finished=time.time())
    make_record("aaaaaaaaaaa2", backend, state="running")
    history.record(BackendStore(backend), history.RunEntry(
        run_id="bbbbbbbbbbb1", pool="team", function="other_client", user="someone@elsewhere", owner="elsewhere:1:2",
        resources=3, outcome="failed", error="ValueError raised by the function", created=time.time() - 60,
        finished=time.time() - 30))
    tag = RunTag(pool="team", function="live_elsewhere", owner="elsewhere:7:8", created=time.time() - 10, ttl=3600)
    diy_backend.create_stack(backend, settings.RUN_PROJECT, "run-ccccccccccc1", {RUN_TAG: tag.model_dump_json()})
    with app_for(backend) as client:
        runs = client.get("/api/runs").json()
        states = {run["run_id"]: run["state"] for run in runs["runs"]}
        assert states == {"aaaaaaaaaaa1": "completed", "aaaaaaaaaaa2": "running", "bbbbbbbbbbb1": "failed",
                          "ccccccccccc1": "running"}
        page = client.get("/runs")
        assert page.status_code == 200
        assert "other_client" in page.text and "live_elsewhere" in page.text
        assert client.get("/api/runs", params={"pool": "team", "state": "failed"}).json()["total"] == 1


def test_a_run_whose_client_died_shows_as_such_and_as_a_gc_candidate(home, backend):
    owner = dead_owner()
    make_record("ddddddddddd1", backend, state="running", owner=owner)
    tag = RunTag(pool="local-process", function="cube", owner=owner, created=time.time() - 10, ttl=3600)
    diy_backend.create_stack(backend, settings.RUN_PROJECT, "run-ddddddddddd1", {RUN_TAG: tag.model_dump_json()})
    with app_for(backend) as client:
        run = client.get("/api/runs/ddddddddddd1").json()["run"]
        assert run["state"] == CLIENT_DIED
        assert "is gone" in run["leak"]
        page = client.get("/runs/ddddddddddd1").text
        assert "gc candidate" in page and "Collect its stack" in page


def test_an_engine_started_ahead_is_not_a_run_until_a_call_claims_it_or_its_client_dies(home, backend):
    """toolkit.ahead keeps a run stack started before its call: listed, the call's page showed the placeholder."""
    def standby(run_id: str, owner: str) -> None:
        tag = RunTag(pool="local-process", function=STANDBY_FUNCTION, owner=owner, created=time.time() - 3, ttl=3600)
        diy_backend.create_stack(backend, settings.RUN_PROJECT, f"run-{run_id}", {RUN_TAG: tag.model_dump_json()})

    standby("fffffffffff1", owner_tag(os.getpid()))  # waiting for a call
    standby("fffffffffff2", owner_tag(os.getpid()))  # claimed: the call's record exists
    make_record("fffffffffff2", backend, state="running", function="the_call")
    standby("fffffffffff3", dead_owner())  # its client was killed: gc's
    with app_for(backend) as client:
        runs = {run["run_id"]: run for run in client.get("/api/runs").json()["runs"]}
        assert set(runs) == {"fffffffffff2", "fffffffffff3"}
        assert (runs["fffffffffff2"]["function"], runs["fffffffffff2"]["state"]) == ("the_call", "running")
        assert runs["fffffffffff3"]["state"] == CLIENT_DIED
        assert client.get("/runs/fffffffffff1").status_code == 404


def test_a_deleted_pools_page_still_lists_its_runs_and_an_unknown_pool_is_not_found(home, backend):
    make_record("eeeeeeeeeee1", backend, pool="retired", state="failed", torn_down=True, finished=time.time(),
                error="PolicyViolationError: team/no-slow-jobs")
    with app_for(backend) as client:
        page = client.get("/pools/retired")
        assert page.status_code == 200
        assert 'id="pool-gone"' in page.text and "eeeeeeeeeee1" in page.text
        answer = client.get("/api/pools/retired").json()
        assert (answer["name"], answer["pool"], [run["run_id"] for run in answer["refused"]]) == (
            "retired", None, ["eeeeeeeeeee1"])
        assert client.get("/pools/never-was").status_code == 404


def test_runs_are_paged_on_the_server(home, backend):
    base = time.time() - 1000
    for number in range(120):
        make_record(f"p{number:011d}", backend, state="completed", torn_down=True, created=base + number,
                    finished=base + number + 1)
    with app_for(backend) as client:
        first = client.get("/api/runs").json()
        assert (first["total"], first["pages"], len(first["runs"])) == (120, 3, 50)
        assert first["runs"][0]["run_id"] == "p00000000119"  # newest first
        last = client.get("/api/runs", params={"page": 3}).json()
        assert [run["run_id"] for run in last["runs"]][-1] == "p00000000000"
        assert len(last["runs"]) == 20
        assert client.get("/runs", params={"page": 2}).text.count('href="/runs/p0') == 50


def test_user_data_renders_as_text(home, backend):
    record = make_record("eeeeeeeeeee1", backend, function=XSS, state="failed", torn_down=True,
                         error=f"ValueError: {XSS}", traceback=f"Traceback ...\nValueError: {XSS}\n")
    record.append_log(f"a line with {XSS}\n")
    with app_for(backend) as client:
        for path in ("/runs", "/runs/rows", "/runs/eeeeeeeeeee1", "/runs/eeeeeeeeeee1/live"):
            text = client.get(path).text
            assert XSS not in text, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
        assert client.get("/runs/eeeeeeeeeee1").headers["content-security-policy"].startswith("default-src 'self'")
        download = client.get("/runs/eeeeeeeeeee1/logs")
        assert download.headers["content-type"].startswith("text/plain")
        assert download.headers["x-content-type-options"] == "nosniff"


def test_a_cross_site_post_is_refused(home, backend):
    make_record("fffffffffff1", backend, state="running")
    with app_for(backend) as client:
        confirm = client.get("/act/cancel", params={"subject": "fffffffffff1"}).text
        csrf = confirm.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "subject": "fffffffffff1"}
        evil = client.post("/act/cancel", data=form, headers={"origin": "http://evil.example"})
        assert evil.status_code == 403
        fetched = client.post("/act/cancel", data=form, headers={"sec-fetch-site": "cross-site"})
        assert fetched.status_code == 403
        forged = client.post("/act/cancel", data={"subject": "fffffffffff1", "csrf": "guessed"})
        assert forged.status_code == 403
        assert not (settings.runs_dir() / "fffffffffff1" / "cancel").exists()
        own = client.post("/act/cancel", data=form, headers={"origin": "http://127.0.0.1:8765"},
                          follow_redirects=False)
        assert own.status_code == 303
        assert (settings.runs_dir() / "fffffffffff1" / "cancel").exists()  # its (live) client tears it down
    [action] = history.actions(BackendStore(backend))
    assert (action.action, action.subject, action.outcome, action.via) == ("cancel", "fffffffffff1", "requested",
                                                                          "toolkit ui")


def test_read_only_has_no_actions(home, backend):
    make_record("ggggggggggg1", backend, state="running")
    with app_for(backend, read_only=True) as client:
        assert "Cancel run" not in client.get("/runs/ggggggggggg1").text
        assert client.get("/act/cancel", params={"subject": "ggggggggggg1"}).status_code in (404, 405)
        assert client.post("/act/cancel", data={"subject": "ggggggggggg1"}).status_code in (404, 405)


def test_a_foreign_host_header_is_refused_without_a_token(home, backend):
    with app_for(backend) as client:
        assert client.get("/runs", headers={"host": "attacker.example"}).status_code == 403
        assert client.get("/runs", headers={"host": "localhost:8765"}).status_code == 200


def test_the_token_is_required_and_traded_for_a_cookie(home, backend):
    catalog = Catalog([backend])
    catalog.refresh()
    app = create_app(Settings(backends=[backend], token="s3cret-token"), catalog)
    with TestClient(app, base_url="http://10.1.2.3:8765") as client:
        assert client.get("/runs").status_code == 403
        assert client.get("/runs", params={"token": "wrong"}).status_code == 403
        traded = client.get("/runs", params={"token": "s3cret-token"}, follow_redirects=False)
        assert traded.status_code == 303 and traded.headers["location"] == "/runs"
        assert "HttpOnly" in traded.headers["set-cookie"] and "SameSite=Strict" in traded.headers["set-cookie"]
        assert client.get("/runs").status_code == 200  # the cookie now
        assert client.get("/api/runs", headers={"authorization": "token s3cret-token"}, ).status_code == 200


def test_only_loopback_binds_go_without_a_token():
    assert not security.needs_token("127.0.0.1")
    assert security.needs_token("0.0.0.0")
    assert security.needs_token("192.0.2.1")


def test_toolkit_ui_on_a_non_loopback_address_refuses_requests_without_its_token(home, backend):
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "ui", "--backend", backend, "--host", "0.0.0.0", "--port", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = process.stderr.readline()
            if line.startswith("open "):
                url = line.split(" ", 1)[1].strip()
        assert "?token=" in url, url
        bare, token = url.split("?token=", 1)
        for guess in ("", "?token=wrong"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{bare}runs{guess}", timeout=10)
            assert refused.value.code == 403
        request = urllib.request.Request(f"{bare}api/runs", headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
            assert json.loads(answer.read())["total"] == 0
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_toolkit_ui_without_its_extra_says_what_to_install(tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "toolkit", "ui"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1
    assert "pip install 'toolkit[ui]'" in result.stderr


def test_a_maps_items_come_from_its_journal(home, backend):
    record = make_record("hhhhhhhhhhh1", backend, state="completed", torn_down=True, items=3, finished=time.time())
    now = time.time()
    lines = [
        {"i": 0, "state": "running", "at": now - 3, "worker": "0"},
        {"i": 1, "state": "running", "at": now - 3, "worker": "1"},
        {"i": 0, "state": "completed", "worker": "0", "started": now - 3, "finished": now - 2},
        {"i": 1, "state": "raised", "worker": "1", "started": now - 3, "finished": now - 1,
         "error": f"ValueError: {XSS}"},
        {"i": 2, "state": "running", "at": now - 2, "worker": "0"},
        {"i": 2, "state": "completed", "worker": "0", "started": now - 2, "finished": now - 1},
    ]
    records.RunRecord.items_journal_of(record.run_id).write_text("".join(json.dumps(line) + "\n" for line in lines))
    with app_for(backend) as client:
        listed = client.get("/api/runs").json()["runs"][0]
        assert listed["items"] == {"pending": 0, "running": 0, "completed": 2, "raised": 1, "failed": 0}
        items = client.get("/api/runs/hhhhhhhhhhh1").json()["items"]
        assert [(item["state"], item["worker"]) for item in items] == [("completed", "0"), ("raised", "1"),
                                                                        ("completed", "0")]
        page = client.get("/runs/hhhhhhhhhhh1").text
        assert page.count("<tr id=\"item-") == 3
        assert page.index('<tr id="item-1"') < page.index('<tr id="item-0"')  # the raised item first
        # The Gantt: the two completed items in one path, the raised one a bar linked to its row.
        completed = page.split('<path d="', 1)[1].split('"', 1)[0]
        assert completed.count("M") == 2 and '" class="item-completed"><title>2 completed items</title>' in page
        assert page.count("<rect ") == 1 + page.count('class="phase-')  # the raised item and the phases
        assert '<a href="?items=raised&amp;items_page=1#item-1">' in page
        assert XSS not in page


def test_a_big_maps_items_table_is_paged_with_the_failed_ones_first(home, backend):
    record = make_record("hhhhhhhhhhh2", backend, state="failed", torn_down=True, items=250, finished=time.time())
    now = time.time()
    lines = [{"i": i, "state": "completed", "worker": str(i % 4), "started": now - 9 + i / 100,
              "finished": now - 8 + i / 100} for i in range(250) if i != 200]
    lines.append({"i": 200, "state": "failed", "at": now - 1, "error": f"worker lost {XSS}"})
    records.RunRecord.items_journal_of(record.run_id).write_text("".join(json.dumps(line) + "\n" for line in lines))

    def rows(page: str) -> list[int]:
        return [int(part.split('"', 1)[0]) for part in page.split('<tr id="item-')[1:]]

    with app_for(backend) as client:
        first = client.get("/runs/hhhhhhhhhhh2").text
        assert rows(first) == [200, *range(99)]
        assert "items 1–100 of 250, failed and raised first" in first and "page 1 of 3" in first
        assert rows(client.get("/runs/hhhhhhhhhhh2?items_page=3").text) == [199, *range(201, 250)]
        assert rows(client.get("/runs/hhhhhhhhhhh2?items=failed").text) == [200]
        assert rows(client.get("/runs/hhhhhhhhhhh2?items=completed&items_page=9").text) == list(range(201, 250))
        assert rows(client.get("/runs/hhhhhhhhhhh2?items=nonsense&items_page=x").text)[:2] == [200, 0]
        assert len(client.get("/api/runs/hhhhhhhhhhh2").json()["items"]) == 250  # the API lists them all
        assert XSS not in first


def test_the_recorded_job_variables_hide_every_secret():
    from toolkit.preparation import variable_layers
    from toolkit.secretvalues import Secret

    template = {"variables": {"properties": {
        "password": {"type": "string", "writeOnly": True, "default": "default-pass"},
        "env": {"type": "object", "default": {}},
        "memory": {"type": "string", "default": "1g"},
    }}}
    layers = [{"memory": "2g", "password": "given-pass"}, {"env.TOKEN": "dotted-secret", "env": {"PLAIN": "x"}}]
    effective = {"password": Secret("given-pass"), "memory": "2g",
                 "env": {"TOKEN": Secret("dotted-secret"), "PLAIN": "x"}}
    shown = {layer.name: layer.values for layer in variable_layers(template, layers, effective)}
    assert shown == {
        "pool defaults": {"password": "[secret]", "env": {}, "memory": "1g"},
        "override 1": {"memory": "2g", "password": "[secret]"},
        "override 2": {"env.TOKEN": "[secret]", "env": {"PLAIN": "x"}},
        "effective": {"password": "[secret]", "memory": "2g", "env": {"TOKEN": "[secret]", "PLAIN": "x"}},
    }
    assert "pass" not in json.dumps(shown).replace("password", "") and "dotted-secret" not in json.dumps(shown)


def test_an_unreachable_backend_hides_no_other_backends_leaks(home, backend, monkeypatch):
    from toolkit.ui import adapter

    owner = dead_owner()
    tag = RunTag(pool="local-process", function="cube", owner=owner, created=time.time() - 10, ttl=3600)
    diy_backend.create_stack(backend, settings.RUN_PROJECT, "run-fffffffffff1", {RUN_TAG: tag.model_dump_json()})
    unreachable = "s3://no-credentials-here"
    readable = adapter.run_stack_tags

    def listing(url: str) -> list[tuple[str, dict[str, str]]]:
        if url == unreachable:
            raise PermissionError("NoCredentialsError: Unable to locate credentials")
        return readable(url)

    monkeypatch.setattr(adapter, "run_stack_tags", listing)
    found = adapter.leaks([unreachable, backend])
    assert [leak.stack for leak in found.leaks] == ["run-fffffffffff1"]
    assert [unread.backend_url for unread in found.unreadable] == [unreachable]
