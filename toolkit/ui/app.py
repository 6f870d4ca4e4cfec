"""The dashboard's web app (Starlette): pages, the JSON API behind them, log streams and actions.

Pages are rendered on the server with Jinja2 (autoescaped: function names,
log lines and exception texts are user data) and kept live by htmx, which
refetches a fragment every few seconds; a run's log follows through
server-sent events. Every page has its JSON twin under ``/api``. Actions
(cancel a run, gc a leaked stack, prune an environment) are a confirmation page
and a POST that carries the CSRF token; each is written to the backend's audit
trail. A read-only dashboard has neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from toolkit.ui import adapter, details, security
from toolkit.ui.catalog import CLIENT_DIED, Catalog, RunRow

FOLLOW_SECONDS = 0.2
"""How often a log stream looks for new lines."""


@dataclass
class Settings:
    backends: list[str]
    read_only: bool = False
    token: str | None = None
    """Required from every request when set (a non-loopback bind)."""
    refresh_seconds: float = 1.0


class _Cached:
    """A slow listing (leaks, environments) computed at most every ``seconds``, off the event loop."""

    def __init__(self, compute: Callable[[], Any], seconds: float) -> None:
        self.compute, self.seconds = compute, seconds
        self.value: Any = None
        self.at = 0.0
        self.error: str | None = None
        self._lock = threading.Lock()

    def get(self, fresh: bool = False) -> Any:
        with self._lock:
            if fresh or time.monotonic() - self.at > self.seconds:
                try:
                    self.value, self.error = self.compute(), None
                except Exception as exc:  # noqa: BLE001 - shown on the page
                    self.error = f"{type(exc).__name__}: {exc}"
                self.at = time.monotonic()
            return self.value


def _when(moment: float | None) -> str:
    return datetime.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return "-"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _row_document(row: RunRow, now: float) -> dict[str, Any]:
    document = dataclasses.asdict(row)
    document["duration"] = row.duration(now)
    return document


class _Dashboard:
    """One dashboard's state (catalog, templates, CSRF secret, cached listings) and its request handlers."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings, self.catalog = settings, catalog
        self.csrf = security.new_secret()
        self.files = resources.files("toolkit.ui")
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.files / "templates")), autoescape=True, trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.filters.update(when=_when, seconds=_seconds, size=_size, pretty=_pretty)
        environment.globals.update(read_only=settings.read_only, csrf=self.csrf, backends=settings.backends,
                                   client_died=CLIENT_DIED)
        self.templates = Jinja2Templates(env=environment)
        self.leaks = _Cached(lambda: adapter.leaks(settings.backends), 3.0)
        self.envs = _Cached(lambda: [info for url in settings.backends for info in adapter.environment_list(url)], 15.0)

    def page(self, request: Request, name: str, **context: Any) -> Response:
        context.setdefault("errors", self.catalog.errors)
        return self.templates.TemplateResponse(request, name, {"now": time.time(), **context})

    @staticmethod
    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    # -- runs ----------------------------------------------------------------------------------

    @staticmethod
    def _filters(request: Request) -> dict[str, Any]:
        query = request.query_params
        try:
            number = int(query.get("page", "1"))
        except ValueError:
            number = 1
        return {"pool": query.get("pool", ""), "state": query.get("state", ""),
                "function": query.get("function", ""), "number": number}

    def runs(self, request: Request) -> Response:
        filters = self._filters(request)
        listing = self.catalog.page(**filters)
        if self.wants_json(request):
            now = time.time()
            return JSONResponse({"total": listing.total, "page": listing.number, "pages": listing.pages,
                                 "runs": [_row_document(row, now) for row in listing.rows]})
        name = "_runs_table.html" if request.url.path == "/runs/rows" else "runs.html"
        return self.page(request, name, listing=listing, filters=filters, query=request.url.query)

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            items_page = int(request.query_params.get("items_page", "1"))
        except ValueError:
            items_page = 1
        detail = details.run_detail(self.catalog, run_id, request.query_params.get("items", ""), items_page)
        if detail is None:
            raise HTTPException(404, f"no run {run_id!r} in the watched backends or this machine's records")
        if self.wants_json(request):
            return JSONResponse(_detail_document(detail))
        if request.url.path.endswith("/live"):
            return self.page(request, "_run_live.html", d=detail)
        text, size, cut = details.log_tail(run_id) if detail.row.local else ("", 0, False)
        return self.page(request, "run.html", d=detail, log=text, log_size=size, log_cut=cut)

    def logs_download(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        row = self.catalog.known(run_id)
        if row is None or not row.local:
            raise HTTPException(404, f"no logs of run {run_id!r} on this machine")
        text, _ = details.log_since(run_id, 0)
        return PlainTextResponse(text, headers={"content-disposition": f'attachment; filename="{run_id}.log"'})

    async def logs_follow(self, request: Request) -> Response:
        """Server-sent events: each new piece of the log as one JSON string, until the run is torn down."""
        run_id = request.path_params["run_id"]
        row = await run_in_threadpool(self.catalog.known, run_id)
        if row is None or not row.local:
            raise HTTPException(404, f"no logs of run {run_id!r} on this machine")
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0

        async def events() -> AsyncIterator[str]:
            nonlocal offset
            quiet = 0.0
            while not await request.is_disconnected():
                text, offset = details.log_since(run_id, offset)
                if text:
                    yield f"data: {json.dumps(text)}\n\n"
                    quiet = 0.0
                current = self.catalog.row(run_id)
                if current is not None and not current.active and not current.stack_live and not text:
                    yield "event: end\ndata: \"\"\n\n"
                    return
                quiet += FOLLOW_SECONDS
                if quiet >= 15:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(FOLLOW_SECONDS)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})

    # -- pools, leaks, environments ---------------------------------------------------------------

    def pools(self, request: Request) -> Response:
        found = adapter.pools()
        if self.wants_json(request):
            return JSONResponse([json.loads(pool.to_document()) for pool in found])
        return self.page(request, "pools.html", pools=found, rows=self.catalog.rows())

    def pool(self, request: Request) -> Response:
        name = request.path_params["name"]
        recent = [row for row in self.catalog.rows() if row.pool == name]
        changes = adapter.pool_changes(name)
        try:
            found: adapter.WorkPool | None = adapter.pool(name)
        except adapter.ToolkitError as exc:
            if not (recent or changes):
                raise HTTPException(404, str(exc)) from None
            found = None  # deleted (or registered elsewhere): its runs and history are still worth a page
        refused = [row for row in recent if row.state == "rejected"]
        verdicts = {row.run_id: (adapter.read_record(row.run_id) or None) for row in refused[:20] if row.local}
        slots = adapter.slots_in_use(found) if found is not None else None
        if self.wants_json(request):
            now = time.time()
            document = json.loads(found.to_document()) if found is not None else None
            return JSONResponse({"name": name, "pool": document, "slots_in_use": slots,
                                 "recent_runs": [_row_document(row, now) for row in recent[:50]],
                                 "refused": [_row_document(row, now) for row in refused[:50]],
                                 "changes": [change.model_dump() for change in changes]})
        variables = found.base_job_template.get("variables", {}) if found is not None else {}
        return self.page(request, "pool.html", pool_name=name, pool=found, schema=variables, slots=slots,
                         recent=recent[:25], refused=refused[:20], verdicts=verdicts, changes=changes)

    def leak_list(self, request: Request) -> Response:
        search = self.leaks.get() or adapter.LeakSearch()
        unreadable = [f"{backend.backend_url}: {backend.error}" for backend in search.unreadable]
        error = "; ".join([*([self.leaks.error] if self.leaks.error else []), *unreadable]) or None
        found = search.leaks
        if self.wants_json(request):
            return JSONResponse({"leaks": [dataclasses.asdict(leak) for leak in found], "error": error})
        return self.page(request, "leaks.html", leaks=found, error=error, stacks=self.catalog.stacks())

    def environment_list(self, request: Request) -> Response:
        found = self.envs.get() or []
        used_by = self.catalog.environment_pools()
        if self.wants_json(request):
            return JSONResponse({"environments": [
                {**info.model_dump(), "pools": sorted(used_by.get(info.reference or "", set()))} for info in found
            ], "error": self.envs.error})
        return self.page(request, "environments.html", environments=found, used_by=used_by, error=self.envs.error)

    # -- actions ----------------------------------------------------------------------------------

    def confirm(self, request: Request) -> Response:
        action = request.path_params["action"]
        subject = request.query_params.get("subject", "")
        if action not in ACTIONS:
            raise HTTPException(404, f"no action {action!r}")
        return self.page(request, "confirm.html", action=action, subject=subject, what=ACTIONS[action])

    async def act(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise HTTPException(404, f"no action {action!r}")
        form = await request.form()
        headers = {key.lower(): value for key, value in request.headers.items()}
        refusal = security.check_action(headers, str(form.get("csrf") or ""), self.csrf)
        if refusal:
            return PlainTextResponse(refusal, status_code=403)
        subject = str(form.get("subject") or "")
        outcome, backend, back = await run_in_threadpool(self._perform, action, subject)
        await run_in_threadpool(adapter.record_action, backend, action, subject, outcome)
        if action == "gc":
            await run_in_threadpool(self.leaks.get, True)
        if action == "prune":
            await run_in_threadpool(self.envs.get, True)
        await run_in_threadpool(self.catalog.refresh)
        if outcome.startswith("failed"):
            return self.page(request, "confirm.html", action=action, subject=subject, what=ACTIONS[action],
                             failure=outcome)
        return RedirectResponse(back, status_code=303)

    def _perform(self, action: str, subject: str) -> tuple[str, str, str]:
        """Carry out one action: ``(outcome, backend to audit it in, page to go back to)``."""
        try:
            if action == "cancel":
                row = self.catalog.row(subject)
                if row is None:
                    raise adapter.ToolkitError(f"no run {subject!r}")
                return adapter.cancel(subject, self.catalog.stack(subject)), row.backend_url, f"/runs/{subject}"
            if action == "gc":
                stack = next((item for item in self.catalog.stacks() if item.name == subject), None)
                if stack is None:
                    raise adapter.ToolkitError(f"no run stack {subject!r} in the watched backends")
                adapter.collect(stack)
                return "done", stack.backend_url, "/leaks"
            left = adapter.prune_environment(subject, self.settings.backends[0])
            return ("done" + (f" ({left})" if left else "")), self.settings.backends[0], "/environments"
        except Exception as exc:  # noqa: BLE001 - reported on the page and in the audit trail
            backend = self.settings.backends[0]
            return f"failed: {type(exc).__name__}: {exc}", backend, "/"

    def not_found(self, request: Request, exc: Exception) -> Response:
        detail = getattr(exc, "detail", str(exc))
        status = getattr(exc, "status_code", 500)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=status)
        return self.templates.TemplateResponse(request, "error.html", {"message": detail, "now": time.time(),
                                                                  "errors": {}}, status_code=status)

    def routes(self) -> list[Route | Mount]:
        routes: list[Route | Mount] = [
            Route("/", lambda request: RedirectResponse("/runs", status_code=303)),
            Route("/runs", self.runs),
            Route("/runs/rows", self.runs),
            Route("/api/runs", self.runs),
            Route("/runs/{run_id}", self.run),
            Route("/runs/{run_id}/live", self.run),
            Route("/api/runs/{run_id}", self.run),
            Route("/runs/{run_id}/logs", self.logs_download),
            Route("/runs/{run_id}/logs/follow", self.logs_follow),
            Route("/pools", self.pools),
            Route("/api/pools", self.pools),
            Route("/pools/{name}", self.pool),
            Route("/api/pools/{name}", self.pool),
            Route("/leaks", self.leak_list),
            Route("/api/leaks", self.leak_list),
            Route("/environments", self.environment_list),
            Route("/api/environments", self.environment_list),
            Mount("/static", StaticFiles(directory=str(self.files / "static")), name="static"),
        ]
        if not self.settings.read_only:
            routes += [Route("/act/{action}", self.confirm, methods=["GET"]),
                       Route("/act/{action}", self.act, methods=["POST"])]
        return routes

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(self.catalog.start)
        try:
            yield
        finally:
            self.catalog.stop()


def create_app(settings: Settings, catalog: Catalog | None = None) -> Starlette:
    """The dashboard over ``settings.backends``; ``catalog``: one already loaded (else made and started here)."""
    dashboard = _Dashboard(settings, catalog or Catalog(settings.backends, settings.refresh_seconds))
    app = Starlette(routes=dashboard.routes(), exception_handlers={HTTPException: dashboard.not_found},
                    lifespan=dashboard.lifespan)
    app.state.catalog = dashboard.catalog
    app.state.csrf = dashboard.csrf
    app.add_middleware(security.Guard, token=settings.token)
    return app


ACTIONS = {
    "cancel": "Cancel run {subject}: stop its job and destroy its stack.",
    "gc": "Destroy the leaked stack {subject} and everything in it, as `toolkit gc` would.",
    "prune": "Destroy the environment stack {subject}, its image (the pushed one too) or virtualenv.",
}


def _detail_document(detail: details.RunDetail) -> dict[str, Any]:
    now = time.time()
    return {
        "run": _row_document(detail.row, now),
        "phases": [{"phase": phase, "began": began, "seconds": seconds} for phase, began, seconds in detail.phases],
        "resources": [{"urn": urn, "type": type_, "parent": parent, "status": status}
                      for urn, type_, parent, status in detail.resources],
        "variables": [layer.model_dump() for layer in detail.variables],
        "policy": detail.policy,
        "error": detail.row.error,
        "traceback": detail.record.traceback if detail.record else None,
        "leak": detail.row.leak,
        "items": [dataclasses.asdict(item) for item in detail.items],
    }
