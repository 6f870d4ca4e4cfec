"""The dashboard's goals (issue 27), measured: a big history, a big map, and how fast a log line shows.

    .venv/bin/python bench/ui.py [--runs 10000] [--items 1000] [--lines 20] [--no-docker]

1. Runs page over ``--runs`` finished runs (real run records and audit entries,
   written in the toolkit's formats into a scratch ``TOOLKIT_HOME``): the time
   ``toolkit ui`` takes to load them, the time to serve the runs page (first
   byte to last, measured by a client on loopback; first page, a later page, a
   filter), and in Chromium the time until the page is usable (the navigation's
   ``loadEventEnd``: HTML, stylesheet and scripts loaded, htmx started).
   Goals: served in <= 0.3 s, usable in <= 1 s.
2. A real ``--items``-item map on the process target, then its run page: served
   (server) and usable in Chromium, and the live fragment a running map's page
   refetches. Goal: <= 1 s.
3. Log latency on process and docker: a job prints a line with its own clock
   every half second while Chromium has the run page open; each line's latency
   is the moment its text node is added to the page (the page's clock) less the
   moment the job printed it. Goal: <= 1 s.

Nothing is asserted; figures are saved as section ``ui`` of bench/results.md
(bench/results/ui.json, rendered by bench/report.py); ``--json`` prints them too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

GOALS = {"runs_served": 0.3, "runs_usable": 1.0, "map_usable": 1.0, "log_latency": 1.0}


def start_ui(env: dict[str, str], *arguments: str) -> tuple[subprocess.Popen[str], str, float]:
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "toolkit", "ui", "--port", "0", *arguments],
                              stderr=subprocess.PIPE, text=True, env=env)
    assert server.stderr is not None
    for line in server.stderr:
        if line.startswith("open "):
            return server, line.split(" ", 1)[1].strip(), time.perf_counter() - started
    raise RuntimeError("toolkit ui did not start")


def served(url: str, repeats: int = 15) -> dict[str, float]:
    """Seconds from request to the last byte, over ``repeats`` requests (after one warm-up)."""
    urllib.request.urlopen(url, timeout=60).read()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as answer:
            answer.read()
        times.append(time.perf_counter() - started)
    return {"median": statistics.median(times), "max": max(times)}


def browser():
    from selenium import webdriver

    profile = tempfile.mkdtemp(prefix="bench-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    driver.profile_dir = profile  # type: ignore[attr-defined]
    return driver


def usable(driver, url: str, repeats: int = 5) -> dict[str, float]:
    """Seconds from navigation start to ``loadEventEnd`` (the page and its scripts loaded and run)."""
    times = []
    for _ in range(repeats):
        driver.get("about:blank")
        driver.get(url)
        for _ in range(100):
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0]; return n ? n.loadEventEnd : 0;")
            if timing:
                break
            time.sleep(0.05)
        times.append(float(timing) / 1000)
    return {"median": statistics.median(times), "max": max(times)}


# -- 1. a big history ---------------------------------------------------------------------------


def write_history(home: Path, backend: str, count: int) -> None:
    """``count`` finished runs: four in five made here (a run record, as this machine's client writes
    it), one in five by another machine's client (only its audit entry in the shared backend)."""
    env_before = os.environ.get("TOOLKIT_HOME")
    os.environ["TOOLKIT_HOME"] = str(home)
    try:
        from toolkit import records
        from toolkit.backend_store import BackendStore
        from toolkit.guardrails import history

        store = BackendStore(backend)
        base = time.time() - count * 30
        pools = ("local-process", "local-docker", "gpu", "etl")
        for number in range(count):
            created = base + number * 30
            state = ("completed", "completed", "completed", "failed", "cancelled")[number % 7 % 5]
            if number % 5 == 0:
                history.record(store, history.RunEntry(
                    run_id=f"{number:012x}", pool=pools[number % 4], function=f"remote_{number % 13}",
                    user="someone@elsewhere", owner="elsewhere:1:1", resources=3, outcome=state, created=created,
                    finished=created + 5))
                continue
            record = records.RunRecord(
                run_id=f"{number:012x}", function=f"task_{number % 37}", pool=pools[number % 4],
                target="process", stack=f"run-{number:012x}", backend_url=backend, state=state, created=created,
                finished=created + 3 + number % 11, owner_pid=1000 + number % 50, owner=f"bench:{1000 + number % 50}:1",
                torn_down=True, phases=[records.PhaseMark(phase="pending", at=created)],
            )
            record.save()
    finally:
        if env_before is None:
            os.environ.pop("TOOLKIT_HOME", None)
        else:
            os.environ["TOOLKIT_HOME"] = env_before


def bench_runs_page(count: int, driver) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-ui-runs-"))
    try:
        backend = f"file://{scratch / 'state'}"
        started = time.perf_counter()
        write_history(scratch / "home", backend, count)
        written = time.perf_counter() - started
        env = {**os.environ, "TOOLKIT_HOME": str(scratch / "home")}
        server, url, load = start_ui(env, "--backend", backend)
        try:
            with urllib.request.urlopen(f"{url}api/runs", timeout=60) as answer:
                total = json.loads(answer.read())["total"]
            return {
                "runs": total, "write_seconds": written, "load_seconds": load,
                "served_first": served(f"{url}runs"), "served_page_100": served(f"{url}runs?page=100"),
                "served_filtered": served(f"{url}runs?pool=gpu&state=failed&function=task_1"),
                "served_api": served(f"{url}api/runs"),
                "usable_first": usable(driver, f"{url}runs"),
            }
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- 2. a big map -------------------------------------------------------------------------------

MAP = textwrap.dedent(
    """
    import json, sys, time
    from toolkit import process

    @process
    def square(x):
        return x * x

    started = time.perf_counter()
    future = square.map(range(int(sys.argv[1])), max_parallel=8)
    values = list(future)
    print(json.dumps({"run_id": future.run_id, "seconds": time.perf_counter() - started, "ok": values[-1]}))
    """
)


def bench_map_page(items: int, driver, env: dict[str, str]) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-ui-map-"))
    try:
        script = scratch / "map.py"
        script.write_text(MAP)
        done = subprocess.run([sys.executable, str(script), str(items)], capture_output=True, text=True, env=env,
                              timeout=1800, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        server, url, _ = start_ui(env)
        try:
            page = f"{url}runs/{result['run_id']}"
            with urllib.request.urlopen(page, timeout=60) as answer:
                size = len(answer.read())
            with urllib.request.urlopen(f"{page}/live", timeout=60) as answer:
                live_size = len(answer.read())
            return {"items": items, "map_seconds": result["seconds"], "page_bytes": size,
                    "served": served(page, repeats=7), "usable": usable(driver, page),
                    "live_bytes": live_size, "live_served": served(f"{page}/live", repeats=7)}
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- 3. log latency -------------------------------------------------------------------------------

PRINTER = textwrap.dedent(
    """
    import sys, time
    import toolkit

    @getattr(toolkit, sys.argv[1])
    def printer(lines):
        import time
        time.sleep(3)  # the page is open and following before the first line
        for number in range(lines):
            print(f"line {number} printed-at {time.time():.3f}", flush=True)
            time.sleep(0.5)

    future = printer.submit(int(sys.argv[2]))
    print(future.run_id, flush=True)
    future.result()
    """
)

OBSERVE = """
window.__seen = [];
const pre = document.getElementById('log');
new MutationObserver(records => {
  const now = (performance.timeOrigin + performance.now()) / 1000;
  for (const record of records) for (const node of record.addedNodes)
    for (const line of node.textContent.split('\\n')) if (line.includes('printed-at')) window.__seen.push([line, now]);
}).observe(pre, {childList: true});
for (const line of pre.textContent.split('\\n')) if (line.includes('printed-at'))
  window.__seen.push([line, (performance.timeOrigin + performance.now()) / 1000]);
"""


def bench_log_latency(target: str, lines: int, driver, env: dict[str, str], url: str) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-ui-log-"))
    try:
        script = scratch / "printer.py"
        script.write_text(PRINTER)
        client = subprocess.Popen([sys.executable, str(script), target, str(lines)], stdout=subprocess.PIPE,
                                  text=True, env=env)
        assert client.stdout is not None
        run_id = client.stdout.readline().strip()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the dashboard lists runs within its refresh (about a second)
            try:
                urllib.request.urlopen(f"{url}api/runs/{run_id}", timeout=10).read()
                break
            except OSError:
                time.sleep(0.2)
        driver.get(f"{url}runs/{run_id}")
        driver.execute_script(OBSERVE)
        client.wait(timeout=600)
        time.sleep(1.5)
        seen = driver.execute_script("return window.__seen;")
        latencies = []
        for text, shown in seen:
            printed = float(text.split("printed-at ", 1)[1].split()[0])
            latencies.append(shown - printed)
        return {"lines": lines, "seen": len(latencies), "median": statistics.median(latencies),
                "p90": sorted(latencies)[int(len(latencies) * 0.9) - 1], "max": max(latencies)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- report ---------------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def render(saved: dict, sections: dict[str, dict] | None = None) -> list[str]:
    """Section ``ui`` of bench/results.md (bench/report.py)."""
    results = saved["data"]
    runs = results["runs_page"]
    lines = [
        "## Dashboard (`toolkit ui`, issue 27)",
        "",
        f"`bench/ui.py` on {results['date']} ({results['machine']}); nothing asserted. Goals: runs page served "
        f"<= {ms(GOALS['runs_served'])} and usable <= {ms(GOALS['runs_usable'])} with 10,000 runs; a 1,000-item "
        f"map's page <= {ms(GOALS['map_usable'])}; a printed line on the page <= {ms(GOALS['log_latency'])}.",
        "",
        "| measure | median | max | goal |",
        "|---|---|---|---|",
        f"| runs page, {runs['runs']:,} runs: served (first page) | {ms(runs['served_first']['median'])} | "
        f"{ms(runs['served_first']['max'])} | <= {ms(GOALS['runs_served'])} |",
        f"| runs page: served (page 100) | {ms(runs['served_page_100']['median'])} | {ms(runs['served_page_100']['max'])} | |",
        f"| runs page: served (pool + state + function filter) | {ms(runs['served_filtered']['median'])} | "
        f"{ms(runs['served_filtered']['max'])} | |",
        f"| runs API (`/api/runs`) | {ms(runs['served_api']['median'])} | {ms(runs['served_api']['max'])} | |",
        f"| runs page: usable in Chromium (loadEventEnd) | {ms(runs['usable_first']['median'])} | "
        f"{ms(runs['usable_first']['max'])} | <= {ms(GOALS['runs_usable'])} |",
    ]
    if "map_page" in results:
        page = results["map_page"]
        lines += [
            f"| {page['items']:,}-item map's page: served ({page['page_bytes'] // 1024} KB) | {ms(page['served']['median'])} | "
            f"{ms(page['served']['max'])} | |",
            f"| {page['items']:,}-item map's page: usable in Chromium | {ms(page['usable']['median'])} | "
            f"{ms(page['usable']['max'])} | <= {ms(GOALS['map_usable'])} |",
        ]
        if "live_served" in page:
            lines.append(f"| its live fragment (what htmx refetches every 2 s while a map runs; "
                         f"{page['live_bytes'] // 1024} KB) | {ms(page['live_served']['median'])} | "
                         f"{ms(page['live_served']['max'])} | |")
    for target in ("process", "docker"):
        latency = results.get(f"log_{target}")
        if latency:
            lines.append(f"| a printed line on the run page, {target} ({latency['seen']} of {latency['lines']} lines; "
                         f"p90 {ms(latency['p90'])}) | {ms(latency['median'])} | {ms(latency['max'])} | "
                         f"<= {ms(GOALS['log_latency'])} |")
    lines += [
        "",
        f"Loading the {runs['runs']:,} runs when `toolkit ui` starts took {runs['load_seconds']:.1f} s (once; then only "
        "what changed is reread, about every second)."
        + (f" The {results['map_page']['items']:,}-item map itself ran in {results['map_page']['map_seconds']:.1f} s."
           if "map_page" in results else ""),
    ]
    return lines


def measure(options: argparse.Namespace) -> dict[str, object]:
    import platform

    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M"),
                                  "machine": f"{os.cpu_count()} cores, {platform.python_version()}"}
    driver = browser()
    home = Path(tempfile.mkdtemp(prefix="bench-ui-home-"))
    env = {**os.environ, "TOOLKIT_HOME": str(home), "TOOLKIT_PROGRESS": "0"}
    try:
        results["runs_page"] = bench_runs_page(options.runs, driver)
        print(json.dumps(results["runs_page"]), file=sys.stderr)
        if options.items:
            results["map_page"] = bench_map_page(options.items, driver, env)
            print(json.dumps(results["map_page"]), file=sys.stderr)
        server, url, _ = start_ui(env)
        try:
            for target in ("process",) + (() if options.no_docker else ("docker",)):
                results[f"log_{target}"] = bench_log_latency(target, options.lines, driver, env, url)
                print(json.dumps(results[f"log_{target}"]), file=sys.stderr)
        finally:
            server.terminate()
            server.wait()
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not save the figures nor update bench/results.md")
    options = parser.parse_args()
    if options.no_write:
        results = measure(options)
        print(json.dumps(results, indent=2) if options.json else "\n".join(render({"data": results})))
        return
    from report import Run  # bench/report.py, next to this script

    saved = Run.begin().section("ui", measure, options)
    if options.json:
        print(json.dumps(saved["data"], indent=2))
    print("\n".join(render(saved)))


if __name__ == "__main__":
    main()
