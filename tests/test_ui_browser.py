"""The dashboard in a real browser: Debian's Chromium, driven through its chromedriver by Selenium.

One ``toolkit ui`` process serves the whole module (as a user starts it), and
one headless Chromium visits it; each test makes real runs (process and
docker targets, through the engine), looks at them the way a person would,
acts through the pages and saves a screenshot in ``test-artifacts/ui/`` (or
``$TOOLKIT_TEST_ARTIFACTS/ui/``). scripts/test installs the browser where it is
missing; without it these tests are skipped with the command that installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import boto3
import pytest

pytest.importorskip("starlette", reason="the dashboard's extra: pip install 'toolkit[ui]'")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import toolkit  # noqa: E402
from tests.clients import kill_holding_client  # noqa: E402
from tests.emulators.aws import REGION, aws_emulator  # noqa: E402, F401 - fixture
from tests.leaks import assert_nothing_left, run_stacks  # noqa: E402
from toolkit import docker, process, settings  # noqa: E402
from toolkit.backend_store import BackendStore  # noqa: E402
from toolkit.errors import PolicyViolationError  # noqa: E402
from toolkit.futures import wait_for_teardowns  # noqa: E402
from toolkit.guardrails import history  # noqa: E402
from toolkit.pools.as_code import template_with_defaults  # noqa: E402
from toolkit.pools.registry import PoolRegistry, WorkPool  # noqa: E402

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
XSS = "<script>alert(1)</script>"
WAIT = 60


def artifacts() -> Path:
    root = Path(os.environ.get("TOOLKIT_TEST_ARTIFACTS") or REPO / "test-artifacts") / "ui"
    root.mkdir(parents=True, exist_ok=True)
    return root


# -- the dashboard and the browser ---------------------------------------------------------------


def start_ui(*arguments: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """``toolkit ui --port 0 ...`` in its own process; returns it and the URL it printed."""
    command = [sys.executable, "-m", "toolkit", "ui", "--port", "0", *arguments]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    assert server.stderr is not None
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if line.startswith("open "):
            return server, line.split(" ", 1)[1].strip()
        if not line and server.poll() is not None:
            break
    server.kill()
    raise AssertionError(f"`toolkit ui` did not start: {server.stderr.read()}")


def stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def ui() -> Iterator[str]:
    server, url = start_ui()
    yield url
    stop(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium is not installed: apt-get install -y chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="toolkit-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    path = artifacts() / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(int(height) + 40, 700), 3000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], object], what: str,
          timeout: float = WAIT) -> object:
    try:
        wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])
        return wait.until(condition)
    except TimeoutException:
        screenshot(driver, f"timeout-{what.replace(' ', '-')[:40]}")
        raise AssertionError(f"the page never showed {what}: {driver.current_url}") from None


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    """The text of the first element ``selector`` finds ('' if none); htmx may replace it meanwhile."""
    for _ in range(5):
        try:
            found = driver.find_elements(By.CSS_SELECTOR, selector)
            return found[0].text if found else ""
        except StaleElementReferenceException:
            continue
    return ""


def no_alert(driver: webdriver.Chrome) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def click(driver: webdriver.Chrome, within: str, link_text: str) -> None:
    """Click a link inside ``within`` (a CSS selector); htmx may have just replaced it, so look again."""
    def clicked(d: webdriver.Chrome) -> bool:
        d.find_element(By.CSS_SELECTOR, within).find_element(By.PARTIAL_LINK_TEXT, link_text).click()
        return True

    until(driver, clicked, f"a link {link_text!r}")


def confirm_action(driver: webdriver.Chrome, within: str, link_text: str) -> None:
    """Click an action's link, then its confirmation page's button."""
    click(driver, within, link_text)
    until(driver, lambda d: d.find_elements(By.ID, "confirm"), "the confirmation page")
    driver.find_element(By.ID, "confirm").click()


# -- runs ------------------------------------------------------------------------------------------


@process
def says_hello_slowly() -> int:
    import time

    print("hello from a process job", flush=True)
    time.sleep(4)
    print("and goodbye", flush=True)
    return 1


@docker
def says_hello_in_docker() -> int:
    print("hello from a docker job", flush=True)
    return 2


@pytest.mark.docker
def test_a_process_and_a_docker_call_show_their_state_and_logs(ui, browser):
    slow = says_hello_slowly.submit()
    in_docker = says_hello_in_docker.submit()
    while slow.state not in ("running", "completed", "failed"):
        time.sleep(0.1)
    browser.get(f"{ui}runs/{slow.run_id}")
    until(browser, lambda d: "hello from a process job" in text_of(d, "#log"), "the first line, live")
    assert "and goodbye" not in text_of(browser, "#log")  # still running: the next line comes by the stream
    assert (slow.result(timeout=300), in_docker.result(timeout=300)) == (1, 2)
    until(browser, lambda d: "and goodbye" in text_of(d, "#log"), "the line printed later, followed")
    until(browser, lambda d: "completed" in text_of(d, "#run-live .status"), "the run completed")
    screenshot(browser, "run-process")
    browser.get(f"{ui}runs/{in_docker.run_id}")
    until(browser, lambda d: "hello from a docker job" in text_of(d, "#log"), "the docker job's log")
    until(browser, lambda d: "completed" in text_of(d, "#run-live .status"), "the docker run completed")
    assert "docker" in text_of(browser, "dl.facts")
    screenshot(browser, "run-docker")
    browser.get(f"{ui}runs")
    for future in (slow, in_docker):
        until(browser, lambda d, f=future: "completed" in row_text(d, f.run_id), f"run {future.run_id} completed")
    screenshot(browser, "runs")
    for future in (slow, in_docker):
        future.wait_teardown(120)


def row_text(driver: webdriver.Chrome, run_id: str) -> str:
    rows = driver.find_elements(By.XPATH, f"//tr[td/a[text()='{run_id}']]")
    return rows[0].text if rows else ""


def named_like_a_script() -> None:
    print(f"a log line with {XSS} in it", flush=True)
    raise ValueError(f"it failed: {XSS}")


named_like_a_script.__qualname__ = named_like_a_script.__name__ = XSS
fails_with_markup = process(named_like_a_script)


def test_a_failing_call_shows_its_exception_and_markup_stays_text(ui, browser):
    future = fails_with_markup.submit()
    with pytest.raises(ValueError):
        future.result(timeout=300)
    future.wait_teardown(120)
    browser.get(f"{ui}runs/{future.run_id}")
    until(browser, lambda d: "it failed" in text_of(d, ".outcome.failed"), "the exception")
    assert no_alert(browser)
    assert XSS in text_of(browser, "h1")  # shown as the text it is
    assert f"ValueError: it failed: {XSS}" in text_of(browser, ".outcome.failed")
    until(browser, lambda d: f"a log line with {XSS}" in text_of(d, "#log"), "the log line as text")
    assert not browser.find_elements(By.XPATH, "//script[contains(., 'alert(1)')]")
    browser.find_element(By.TAG_NAME, "summary").click()
    screenshot(browser, "run-failed")
    browser.get(f"{ui}runs")
    until(browser, lambda d: XSS in row_text(d, future.run_id), "the function's name in the list")
    assert no_alert(browser)


@process
def fails_on_three(x: int) -> int:
    import time

    time.sleep(0.3)
    if x == 3:
        raise ValueError("item 3 fails")
    return x * x


def test_a_map_shows_its_items_with_the_failing_one(ui, browser):
    mapped = fails_on_three.map(range(9), max_parallel=3, return_exceptions=True)
    outcomes = list(mapped)
    assert isinstance(outcomes[3], ValueError) and outcomes[8] == 64
    mapped.wait_teardown(120)
    browser.get(f"{ui}runs/{mapped.run_id}")
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "table.items tbody tr")) == 9, "nine items")
    raised = browser.find_elements(By.CSS_SELECTOR, "table.items tr.item-raised")
    assert [row.find_element(By.TAG_NAME, "td").text for row in raised] == ["3"]
    assert "ValueError: item 3 fails" in raised[0].text
    # The Gantt: the eight completed items as one path, the raised one as its own bar, linked to its row.
    completed = browser.find_elements(By.CSS_SELECTOR, "svg.gantt path.item-completed")
    assert len(completed) == 1 and completed[0].get_attribute("d").count("M") == 8
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.gantt rect")
    assert [bar.get_attribute("class") for bar in bars] == ["item-raised"]
    assert bars[0].find_element(By.XPATH, "..").get_dom_attribute("href") == "?items=raised&items_page=1#item-3"
    assert "8 ok, 1 raised of 9" in text_of(browser, "#run-live .status")
    screenshot(browser, "run-map")


# -- actions ---------------------------------------------------------------------------------------


@process
def sleeps_until_cancelled() -> None:
    import time

    print("sleeping until cancelled", flush=True)
    time.sleep(600)


def test_cancel_from_the_ui_tears_the_stack_down(ui, browser):
    future = sleeps_until_cancelled.submit()
    browser.get(f"{ui}runs/{future.run_id}")
    until(browser, lambda d: "sleeping until cancelled" in text_of(d, "#log"), "the running job's log")
    confirm_action(browser, "#run-live", "Cancel run")
    assert future.wait_teardown(180), "the run was not torn down"
    assert future.state == "cancelled"
    until(browser, lambda d: "cancelled" in text_of(d, "#run-live .status"), "the run cancelled")
    screenshot(browser, "run-cancelled")
    wait_for_teardowns()  # and the engine started ahead by this session's earlier calls (toolkit/ahead.py)
    assert_nothing_left()
    audited = history.actions(BackendStore(settings.default_backend_url()))
    assert any((entry.action, entry.subject) == ("cancel", future.run_id) for entry in audited)


def test_a_killed_clients_run_shows_as_leaked_and_gc_from_the_ui_removes_it(ui, browser, tmp_path):
    run_id = kill_holding_client(tmp_path)
    assert f"run-{run_id}" in run_stacks()
    browser.get(f"{ui}runs/{run_id}")
    until(browser, lambda d: "client died" in text_of(d, "#run-live .status"), "the run as its client's death")
    assert "gc candidate" in text_of(browser, "#run-live .status")
    screenshot(browser, "run-leaked")
    browser.get(f"{ui}leaks")
    until(browser, lambda d: f"run-{run_id}" in text_of(d, "#leaks"), "the leaked stack")
    screenshot(browser, "leaks")
    confirm_action(browser, f"#leak-run-{run_id}", "gc")
    until(browser, lambda d: d.current_url.endswith("/leaks"), "the leaks page again")
    assert f"run-{run_id}" not in run_stacks()
    until(browser, lambda d: f"run-{run_id}" not in text_of(d, "#leaks"), "the leak gone")
    audited = history.actions(BackendStore(settings.default_backend_url()))
    assert any((entry.action, entry.subject, entry.outcome) == ("gc", f"run-{run_id}", "done") for entry in audited)
    assert_nothing_left()


# -- pools -----------------------------------------------------------------------------------------

GUARDED = "ui-guarded"


@docker(pool=GUARDED)
def add_one(x: int) -> int:
    return x + 1


@pytest.mark.docker
def test_a_pool_page_shows_its_template_and_a_policy_refusal(ui, browser):
    template = template_with_defaults("docker", mem_limit="256m")
    pack = REPO / "examples" / "policy_pack"
    PoolRegistry().save(WorkPool(name=GUARDED, type="docker", base_job_template=template, policy_packs=[str(pack)],
                                 description="docker jobs under the example policy pack"), overwrite=True)
    try:
        with pytest.raises(PolicyViolationError):
            add_one.with_options(privileged=True, labels={"team": "ml"})(1)
        wait_for_teardowns()
        browser.get(f"{ui}pools/{GUARDED}")
        until(browser, lambda d: "no-privileged-containers" in d.find_element(By.TAG_NAME, "main").text,
              "the refusal's policy")
        page = browser.find_element(By.TAG_NAME, "main").text
        assert '"image"' in page or "image" in text_of(browser, "pre.json")  # the template
        assert "mem_limit" in text_of(browser, "table.schema") and '"256m"' in text_of(browser, "table.schema")
        assert str(pack) in page
        screenshot(browser, "pool")
    finally:
        PoolRegistry().delete(GUARDED)


# -- what no page may show ---------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "hx-get", "data-follow") and value:
                self.links.append(value)


def crawl(start: str, seeds: list[str], limit: int = 400) -> dict[str, bytes]:
    """Every page and API answer reachable from ``seeds`` on the dashboard (its actions' POSTs aside)."""
    origin = urlparse(start).netloc
    queue, seen, bodies = [urljoin(start, seed) for seed in seeds], set(), {}
    while queue and len(bodies) < limit:
        url = queue.pop(0).split("#", 1)[0]
        if url in seen or urlparse(url).netloc != origin or "/static/" in url:
            continue
        seen.add(url)
        try:
            with urllib.request.urlopen(url, timeout=60) as answer:
                body = answer.read()
                kind = answer.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from None
        bodies[url] = body
        if kind.startswith("text/html"):
            parser = _Links()
            parser.feed(body.decode("utf-8", errors="replace"))
            # another run's live log stream never ends while that run lives: only the seeds' are read
            queue += [urljoin(url, link) for link in parser.links if "/logs/follow" not in link]
    return bodies


@process
def uses_a_secret() -> int:
    import os

    print("the job has its token", flush=True)
    return len(os.environ["API_TOKEN"])


def test_no_page_or_api_answer_shows_a_secrets_value(ui, browser):
    value = f"tk-{uuid.uuid4().hex}-secret"
    future = uses_a_secret.with_options(env={"API_TOKEN": toolkit.secret(value)}).submit()
    assert future.result(timeout=300) == len(value)
    future.wait_teardown(120)
    run = f"runs/{future.run_id}"
    bodies = crawl(ui, ["runs", run, f"{run}/live", f"{run}/logs", f"{run}/logs/follow?offset=0", f"api/{run}",
                        "api/runs", "pools", "api/pools", "leaks", "api/leaks", "environments", "api/environments"])
    assert len(bodies) >= 13
    leaked = [url for url, body in bodies.items() if value.encode() in body]
    assert leaked == []
    detail = json.loads(bodies[urljoin(ui, f"api/{run}")])
    effective = next(layer for layer in detail["variables"] if layer["name"] == "effective")
    assert effective["values"]["env"]["API_TOKEN"] == "[secret]"
    browser.get(urljoin(ui, run))
    until(browser, lambda d: "[secret]" in text_of(d, "table.variables"), "the secret masked")
    screenshot(browser, "run-secret-masked")


# -- a shared backend -------------------------------------------------------------------------------

SHARED = "ui-shared"
CLIENT = textwrap.dedent(
    f"""
    from toolkit import process

    @process(pool="{SHARED}")
    def square(x):
        return x * x

    print(square(int(__import__("sys").argv[1])))
    """
)


@pytest.mark.slow
def test_the_ui_on_an_s3_backend_shows_the_runs_of_two_client_processes(aws_emulator, browser, tmp_path):  # noqa: F811
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="toolkit-ui-state")
    backend = f"s3://toolkit-ui-state?endpoint={aws_emulator}&use_path_style=true&region={REGION}"
    pools = tmp_path / "pools"
    PoolRegistry(str(pools)).save(WorkPool(name=SHARED, type="process", backend_url=backend))
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    clients = []
    for number in (3, 4):
        home = tmp_path / f"client-{number}"
        env = {**os.environ, "TOOLKIT_HOME": str(home), "TOOLKIT_POOLS_URL": str(pools)}
        clients.append(subprocess.Popen([sys.executable, str(script), str(number)], stdout=subprocess.PIPE,
                                        text=True, env=env))
    outputs = [client.communicate(timeout=600)[0].strip() for client in clients]
    assert [client.returncode for client in clients] == [0, 0] and outputs == ["9", "16"]
    viewer = {**os.environ, "TOOLKIT_HOME": str(tmp_path / "viewer"), "TOOLKIT_POOLS_URL": str(pools)}
    server, url = start_ui("--backend", backend, env=viewer)
    try:
        with urllib.request.urlopen(f"{url}api/runs", timeout=60) as answer:
            runs = json.loads(answer.read())["runs"]
        assert [(run["function"], run["state"], run["pool"]) for run in runs] == [("square", "completed", SHARED)] * 2
        assert len({run["owner"] for run in runs}) == 2  # two client processes (host:pid:start)
        browser.get(f"{url}runs")
        until(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".count").text.startswith("2 runs"), "two runs")
        screenshot(browser, "runs-shared-backend")
    finally:
        stop(server)
