"""Build progress: lines for people, JSON events for scripts (``--json`` sets TOOLKIT_PROGRESS=json)."""

from __future__ import annotations

import json

from toolkit.environments.events import Reporter


def test_json_mode_emits_one_event_per_step(monkeypatch, capsys):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "json")
    report = Reporter("env-0123")
    report("downloading", "humanize-4.12.3-py3-none-any.whl", 128_055)
    report("building", "env-0123: 1 wheel(s)")
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert events == [
        {"event": "environment", "environment": "env-0123", "stage": "downloading",
         "message": "humanize-4.12.3-py3-none-any.whl", "bytes": 128_055},
        {"event": "environment", "environment": "env-0123", "stage": "building",
         "message": "env-0123: 1 wheel(s)", "bytes": None},
    ]


def test_lines_for_people_carry_sizes(monkeypatch, capsys):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "1")
    Reporter("env-0123")("downloading", "humanize-4.12.3-py3-none-any.whl", 128_055)
    assert "downloading: humanize-4.12.3-py3-none-any.whl (128.1 kB)" in capsys.readouterr().err


def test_silenced(monkeypatch, capsys):
    monkeypatch.setenv("TOOLKIT_PROGRESS", "0")
    Reporter("env-0123")("building", "x")
    assert capsys.readouterr().err == ""
