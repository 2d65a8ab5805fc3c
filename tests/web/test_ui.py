"""Pages in-process: dashboard rows and live fragment, env history, launcher form, job log events."""

from __future__ import annotations

import json
import re

from .conftest import csrf_of, launch
from .test_api import finish


def events(text: str) -> list[tuple[str | None, str, str]]:
    """(id, event, data) of each server-sent event in `text`."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields.get("id"), fields["event"], fields.get("data", "")))
    return out


def test_dashboard_rows_show_what_a_person_needs(client, store):
    job = launch(client, "feature/login")
    store.update_job(job["id"], pusher="octocat", subject="Add the login page")
    store.update_env("feature-login.preview.test", pusher="octocat", subject="Add the login page")
    finish(store, job["id"], commit="0123456789abcdef" * 2 + "01234567")
    html = client.get("/").text
    row = re.search(r'<tr class="env" data-host="feature-login.preview.test".*?</tr>', html, re.S).group(0)
    assert ">feature/login</a>" in row
    assert '<a class="url" href="http://feature-login.preview.test:8000/"' in row
    assert ">0123456</code>" in row and "Add the login page" in row
    assert '<span class="badge live">live</span>' in row and "octocat" in row
    assert "just now" in row and 'class="dot succeeded"' in row
    for action in (">Logs</a>", ">Redeploy</button>", ">Terminate</button>"):
        assert action in row


def test_terminating_rows_say_so(client, store):
    finish(store, launch(client, "main")["id"])
    client.delete("/api/envs/main.preview.test")
    assert '<span class="badge terminating">terminating</span>' in client.get("/fragments/dashboard").text


def test_fragment_is_conditional(client, store):
    first = client.get("/fragments/dashboard")
    assert first.status_code == 200 and first.headers["ETag"]
    assert client.get("/fragments/dashboard", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    launch(client, "main")
    changed = client.get("/fragments/dashboard", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and "main.preview.test" in changed.text


def test_env_page_lists_its_job_history(client, store):
    a = launch(client, "main")
    finish(store, a["id"], status="failed")
    b = launch(client, "main", COLOR="blue")
    finish(store, b["id"])
    html = client.get("/envs/main.preview.test").text
    assert html.index(b["id"]) < html.index(a["id"]), "newest first"
    assert "<code>COLOR=blue</code>" in html and "3.0 s" in html
    assert client.get("/envs/nope.preview.test").status_code == 404


def test_launcher_shows_parameters_and_errors_next_to_fields(client, store):
    page = client.get("/launch?app=shop")
    assert page.status_code == 200
    assert '<option value="feature/login">' in page.text, "branches come from the repository"
    assert 'id="param-COLOR"' in page.text and 'id="param-TICKET"' in page.text
    token = csrf_of(page.text)
    refused = client.post("/launch", data={"csrf_token": token, "app": "shop", "branch": "nope",
                                           "param.TICKET": "bad", "param.COLOR": "blue"})
    assert refused.status_code == 422
    assert re.search(r'id="branch-error">no such branch', refused.text)
    assert re.search(r'id="param-TICKET-error">TICKET must match', refused.text)
    assert 'value="bad"' in refused.text and '<option value="blue" selected>' in refused.text, "input is kept"
    ok = client.post("/launch", data={"csrf_token": token, "app": "shop", "branch": "fix-1", "param.TICKET": "OK-9"})
    assert ok.status_code == 302 and ok.headers["Location"].startswith("/jobs/")
    job = store.job(ok.headers["Location"].rsplit("/", 1)[1])
    assert (job.branch, job.source, job.params) == ("fix-1", "ui", {"COLOR": "red", "TICKET": "OK-9"})


def test_job_events_batch_resume_and_end(client, store):
    job = launch(client, "main")
    for i in range(2500):
        store.append_log(job["id"], f"line {i}")
    finish(store, job["id"])
    stream = events(client.get(f"/jobs/{job['id']}/events").text)
    lines = [e for e in stream if e[1] == "lines"]
    texts = [line["t"] for _, _, data in lines for line in json.loads(data)]
    assert texts[0].startswith("queued deploy") and texts[1:2501] == [f"line {i}" for i in range(2500)]
    assert len(lines) < 10, "lines travel in batches"
    assert stream[-1][1] == "end" and json.loads(stream[-1][2])["status"] == "succeeded"

    resume_at = lines[1][0]
    resumed = events(client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": resume_at}).text)
    again = [line["t"] for _, ev, data in resumed if ev == "lines" for line in json.loads(data)]
    sent_before = sum(len(json.loads(d)) for _, _, d in lines[:2])
    assert again == texts[sent_before:], "resuming repeats nothing and drops nothing"
    assert client.get(f"/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"}).status_code == 400


def test_job_page(client, store):
    job = launch(client, "main")
    html = client.get(f"/jobs/{job['id']}").text
    assert f'data-events="/jobs/{job["id"]}/events"' in html and "ansi.js" in html
    assert client.get("/jobs/nope").status_code == 404
