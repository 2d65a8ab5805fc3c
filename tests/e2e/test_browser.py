"""The web UI in a real browser (Debian's headless Chromium via Playwright) against a real
`mirage-git up` with auth on, real Docker builds and the real proxy.

Builds are made slow on purpose (a Dockerfile RUN step that prints a line a second), so
the test can watch a log page fill in while the build runs. The log streams are cut every
few seconds (`[web] stream_max`), so the browser reconnects several times during one build;
the page must still show every line exactly once.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mirage_git.models import Job

from .harness import AppRepo, Service, cleanup_docker, github_push

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TOKEN = "browser-" + secrets.token_hex(8)
PARAMS = """
[apps.{app}.parameters.COLOR]
env = "APP_COLOR"
options = ["red", "blue"]
default = "red"
[apps.{app}.parameters.TICKET]
required = true
rule = "[A-Z]+-[0-9]+"
description = "The issue this preview is for"
"""


def slow_build(seconds: int) -> dict[str, str]:
    """Files that make the test app's build print a (partly green) line a second for `seconds`.

    A random token keeps Docker's build cache from skipping the step.
    """
    bb = "/bin/busybox"
    script = (f"echo build {secrets.token_hex(4)}\nfor i in $({bb} seq 1 {seconds}); do\n"
              f"  {bb} printf '\\033[32mtick\\033[0m %s\\n' $i\n  {bb} sleep 1\ndone\n")
    dockerfile = ("FROM scratch\nCOPY busybox /bin/busybox\nCOPY slow.sh /slow.sh\n"
                  f'RUN ["{bb}", "sh", "/slow.sh"]\n'
                  "COPY www /www\nCOPY start.sh /start.sh\nEXPOSE 8080\n"
                  'CMD ["/bin/busybox", "sh", "/start.sh"]\n')
    return {"Dockerfile": dockerfile, "slow.sh": script}


@pytest.fixture(scope="module")
def ui_repo(tmp_path_factory: pytest.TempPathFactory) -> AppRepo:
    return AppRepo(tmp_path_factory.mktemp("uirepo") / "app")


@pytest.fixture(scope="module")
def ui_service(tmp_path_factory: pytest.TempPathFactory, ui_repo: AppRepo) -> Iterator[Service]:
    app = f"ui{secrets.token_hex(3)}"
    svc = Service(tmp_path_factory.mktemp("uiservice"), app, ui_repo.path, extra=PARAMS.format(app=app),
                  web_extra="stream_max = 3", token=TOKEN)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        cleanup_docker(app)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; scripts/setup installs it (apt-get install chromium)", pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, ui_service: Service) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def sign_in(page: Page, svc: Service) -> None:
    page.goto(svc.web + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.fill("#token", "not the token")
    page.click("button[type=submit]")
    expect(page.locator("#token-error")).to_have_text("That token is not right.")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(svc.web + "/")
    expect(page.locator("h1")).to_have_text("Environments")


def log_lines(page: Page) -> int:
    return int(page.locator("#job").get_attribute("data-lines") or 0)


def test_pushed_branch_appears_and_its_log_streams_live(page: Page, ui_service: Service, ui_repo: AppRepo):
    svc = ui_service
    sign_in(page, svc)
    branch = "feature/live-log"
    sha = ui_repo.commit(branch, {**slow_build(12), "www/index.html": "live log\n"},
                         message="Make the build slow")
    body, headers = github_push(svc.app, branch, sha)
    assert svc.hook("github", body, headers).status_code == 202

    row = page.locator(f'tr.env[data-branch="{branch}"]')
    expect(row).to_be_visible(timeout=15_000)  # no reload: the dashboard polls
    expect(row.locator(".badge")).to_have_text(re.compile("queued|building"))
    expect(row).to_contain_text("Codertocat")
    expect(row).to_contain_text(sha[:7])

    row.get_by_role("link", name="Logs").click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.locator(".log .fg2").first.wait_for(timeout=60_000)  # a green "tick": ANSI colours render
    first = log_lines(page)
    expect(page.locator("#status")).to_have_text("running")
    page.wait_for_function(f"Number(document.getElementById('job').dataset.lines) > {first + 3}", timeout=30_000)
    assert page.locator("#job").get_attribute("data-done") is None, "lines arrived while the build ran"
    expect(page.locator('#steps li[data-step="build"].running')).to_be_visible()

    page.wait_for_selector("#job[data-done='1']", timeout=120_000)
    expect(page.locator("#status")).to_have_text("succeeded")
    env_url = f"http://feature-live-log.{svc.domain}:{svc.proxy_port}/"
    expect(page.locator("#result a")).to_have_attribute("href", env_url)
    for step in ("fetch", "build", "run", "health", "route"):
        expect(page.locator(f'#steps li[data-step="{step}"].ok .dur')).to_have_text(re.compile(r"\d+\.\d s|min"))
    expect(page.locator("#step-build .dur")).to_have_text(re.compile(r"\d"))

    shown = page.eval_on_selector(
        "#log", "el => { const c = el.cloneNode(true); c.querySelectorAll('.dur').forEach(d => d.remove());"
                " return c.textContent; }")
    raw = re.sub(r"\x1b\[[0-9;]*m", "", svc.log(job_id))
    expected = [line for line in raw.splitlines() if line.strip()]
    assert [line for line in shown.splitlines() if line.strip()] == expected, \
        "after several reconnects every line is there exactly once"
    assert log_lines(page) == len(svc.log(job_id).splitlines())
    assert page.evaluate("window.mirageLog.opens()") >= 3, "the stream was cut and resumed during the build"
    ticks = [line for line in shown.splitlines() if line.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(1, 13)]

    page.goto(svc.web + "/")
    live_row = page.locator(f'tr.env[data-branch="{branch}"]')
    expect(live_row.locator(".badge")).to_have_text("live")
    expect(live_row.locator("a.url")).to_have_attribute("href", env_url)
    expect(live_row.locator(".dot.succeeded")).to_have_count(1)


def test_launch_with_a_parameter_then_terminate(page: Page, ui_service: Service, ui_repo: AppRepo):
    svc = ui_service
    ui_repo.commit("launch-me", {"www/index.html": "launched\n"})
    sign_in(page, svc)
    page.get_by_role("link", name="Launch a branch").click()
    expect(page.locator("#branch-list option[value='launch-me']")).to_have_count(1)
    page.fill("#branch", "launch-me")
    page.select_option("#param-COLOR", "blue")
    page.fill("#param-TICKET", "not a ticket")
    page.click("#launch")
    expect(page.locator("#param-TICKET-error")).to_contain_text("must match")
    expect(page.locator("#param-TICKET")).to_have_attribute("aria-invalid", "true")
    page.fill("#param-TICKET", "WEB-42")
    page.click("#launch")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    page.wait_for_selector("#job[data-done='1']", timeout=120_000)
    expect(page.locator("#status")).to_have_text("succeeded")

    host = f"launch-me.{svc.domain}"
    page.goto(f"http://{host}:{svc.proxy_port}/cgi-bin/env")  # Chromium resolves *.localhost to loopback
    seen = page.locator("body").inner_text()
    assert "APP_COLOR=blue" in seen and "TICKET=WEB-42" in seen and "GIT_BRANCH=launch-me" in seen

    page.goto(svc.web + "/")
    row = page.locator(f'tr.env[data-host="{host}"]')
    expect(row.locator(".badge")).to_have_text("live")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Terminate").click()
    expect(page.locator(".flash")).to_contain_text("Terminating")
    expect(page.locator(f'tr.env[data-host="{host}"]')).to_have_count(0, timeout=60_000)
    assert svc.api("GET", f"/api/envs/{host}").status_code == 404
    assert svc.get(host).status_code == 404


def test_a_100k_line_log_renders_without_freezing_the_page(page: Page, ui_service: Service):
    svc = ui_service
    store = svc.store
    job = Job(id=secrets.token_hex(6), app=svc.app, branch="big-log", action="deploy",
              host=f"big-log.{svc.domain}", env_url=f"http://big-log.{svc.domain}/", status="succeeded",
              started_at=time.time() - 60, ended_at=time.time())
    store.save_job(job)
    pipe = store.r.pipeline(transaction=False)
    for i in range(100_000):
        pipe.xadd(f"mirage:job:{job.id}:log", {"t": f"\x1b[3{i % 8}mline {i}\x1b[0m of a very long build log"})
        if i % 5000 == 4999:
            pipe.execute()
    store.append_log(job.id, "the end", end="succeeded")

    sign_in(page, svc)
    page.add_init_script("""
      window.__longest = 0;
      new PerformanceObserver(list => list.getEntries().forEach(e => {
        window.__longest = Math.max(window.__longest, e.duration); })).observe({entryTypes: ['longtask']});
    """)
    started = time.monotonic()
    page.goto(f"{svc.web}/jobs/{job.id}")
    probes = []
    while page.locator("#job").get_attribute("data-done") != "1":
        t = time.monotonic()
        page.evaluate("1 + 1")  # the page answers while it loads
        probes.append(time.monotonic() - t)
        assert time.monotonic() - started < 90, "the log did not finish loading"
        time.sleep(0.2)
    loaded = time.monotonic() - started
    assert log_lines(page) == 100_001  # 100,000 lines and "the end"
    longest = page.evaluate("window.__longest")
    page.locator("#log").evaluate("el => el.scrollTop = el.scrollHeight")
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    inside = page.evaluate("""() => { const box = document.getElementById('log').getBoundingClientRect();
      const end = document.querySelector('#log .end-succeeded').getBoundingClientRect();
      return end.top >= box.top && end.bottom <= box.bottom + 1; }""")
    assert inside, "scrolled to the bottom, the log shows its last line"
    t = time.monotonic()
    page.locator("#log").evaluate("el => el.scrollTop = el.scrollHeight / 2")
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    scroll = time.monotonic() - t
    print(f"\n100k-line log: loaded in {loaded:.1f}s, longest main-thread task {longest:.0f} ms, "
          f"slowest probe {max(probes, default=0) * 1000:.0f} ms, scroll to middle {scroll * 1000:.0f} ms")
    assert longest < 1500, f"a {longest:.0f} ms long task froze the page"
    assert max(probes, default=0) < 3, "the page stopped answering while it loaded"


def test_a_failed_job_ends_with_its_reason(page: Page, ui_service: Service):
    svc = ui_service
    job = Job(id=secrets.token_hex(6), app=svc.app, branch="broken", action="deploy", host=f"broken.{svc.domain}",
              env_url=f"http://broken.{svc.domain}/", status="running", started_at=time.time())
    svc.store.save_job(job)
    sign_in(page, svc)
    page.goto(f"{svc.web}/jobs/{job.id}")
    expect(page.locator("#status")).to_have_text("running")
    svc.store.append_log(job.id, "==> Building the image", step="build")
    svc.store.update_job(job.id, steps=[{"name": "build", "started_at": time.time(), "ended_at": None,
                                         "status": "running"}])
    expect(page.locator('#steps li[data-step="build"].running')).to_be_visible()
    reason = "docker build failed: COPY failed: file not found"
    svc.store.update_job(job.id, status="failed", ended_at=time.time(), error=reason,
                         steps=[{"name": "build", "started_at": time.time() - 1, "ended_at": time.time(),
                                 "status": "failed"}])
    svc.store.append_log(job.id, f"deploy failed: {reason}", end="failed")
    expect(page.locator("#result")).to_have_text(f"Deploy failed: {reason}")
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator('#steps li[data-step="build"].failed')).to_be_visible()
    expect(page.locator("#log .end-failed")).to_have_text(f"deploy failed: {reason}")
