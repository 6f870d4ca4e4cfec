"""Job output from Cloud Logging, for both Google targets' watchers."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from toolkit.infra.rest import CloudApiError, RestClient, endpoint, google_session

LOGGING_ENDPOINT_ENV = "TOOLKIT_CLOUD_LOGGING_ENDPOINT"
LOGGING_ENDPOINT = "https://logging.googleapis.com"
LOG_POLL_SECONDS = 5.0
"""Cloud Logging allows 60 entries.list calls a minute per project; several runs share that."""


class CloudLogReader:
    """Incremental reads of Cloud Logging entries matching a filter, oldest first.

    Entries arrive in Cloud Logging a few seconds late and out of order within
    the same second, so each read asks for ``timestamp >= last seen`` and drops
    entries already returned (by ``insertId``). Reads are throttled to the API's
    quota; a failed read is reported once in the log text and never fails the run.
    """

    def __init__(
        self, project: str, log_filter: str, client: RestClient | None = None, min_interval: float = LOG_POLL_SECONDS
    ) -> None:
        self._given_client = client
        self._project = project
        self._filter = log_filter
        self._min_interval = min_interval
        self._last_read = float("-inf")
        self._since: str | None = None
        self._seen: set[str] = set()
        self._failure_reported = False

    @functools.cached_property
    def _client(self) -> RestClient:
        if self._given_client is not None:
            return self._given_client
        base = endpoint(LOGGING_ENDPOINT_ENV, LOGGING_ENDPOINT)
        return RestClient(base, google_session())

    def read(self, force: bool = False) -> str:
        now = time.monotonic()
        if not force and now - self._last_read < self._min_interval:
            return ""
        self._last_read = now
        try:
            entries = self._entries()
        except CloudApiError as exc:
            if self._failure_reported:
                return ""
            self._failure_reported = True
            return f"[toolkit] job logs are unavailable: {exc}. Grant roles/logging.viewer to see them\n"
        lines = []
        for entry in entries:
            insert_id = entry.get("insertId", "")
            if insert_id in self._seen:
                continue
            timestamp = entry.get("timestamp", "")
            if timestamp != self._since:
                self._seen = set()
                self._since = timestamp
            self._seen.add(insert_id)
            lines.append(_entry_text(entry))
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    def _entries(self) -> list[dict[str, Any]]:
        log_filter = self._filter if self._since is None else f'{self._filter} AND timestamp>="{self._since}"'
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{self._project}"],
            "filter": log_filter,
            "orderBy": "timestamp asc",
            "pageSize": 1000,
        }
        entries: list[dict[str, Any]] = []
        while True:
            page = self._client.call("POST", "/v2/entries:list", body)
            entries.extend(page.get("entries", []))
            token = page.get("nextPageToken")
            if not token:
                return entries
            body = {**body, "pageToken": token}


def _entry_text(entry: dict[str, Any]) -> str:
    if "textPayload" in entry:
        return str(entry["textPayload"])
    payload = entry.get("jsonPayload")
    if isinstance(payload, dict):
        return str(payload.get("message") or json.dumps(payload))
    return json.dumps(entry.get("protoPayload", ""))
