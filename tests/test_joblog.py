"""A job's log stays bounded whatever a build prints, and its last line always lands."""

from __future__ import annotations

from mirage_git.store import Store
from worker import joblog
from worker.joblog import JobLog


def test_a_huge_line_is_cut_and_says_so(store: Store):
    log = JobLog(store, "j1")
    log("x" * 5_000_000)
    log("next")
    (first, second) = [fields["t"] for _, fields in store.log("j1")]
    assert len(first) < joblog.MAX_LINE + 100 and first.startswith("x" * 1000)
    assert "5,000,000 characters" in first
    assert second == "next"


def test_the_log_stops_growing_at_its_cap_but_steps_and_the_outcome_still_land(store: Store, monkeypatch):
    monkeypatch.setattr(joblog, "MAX_TOTAL", 10_000)
    log = JobLog(store, "j2")
    for i in range(1000):
        log(f"line {i:04d} " + "." * 90)
    with log.step("health", "Waiting for / to answer"):
        log("dropped too")
    log.finish("failed", "deploy failed: the app did not answer", error="the app did not answer")
    texts = [fields["t"] for _, fields in store.log("j2")]
    assert sum(len(t) for t in texts) < 12_000
    notices = [t for t in texts if "log is cut" in t]
    assert len(notices) == 1, "one notice, not one per dropped line"
    assert "==> Waiting for / to answer" in texts
    assert texts[-1] == "deploy failed: the app did not answer"
