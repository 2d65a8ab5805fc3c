// Tail a job's log over server-sent events, from its first line to its result.
//
// Each event carries a batch of lines and the id of the last one; on a reconnect the browser
// sends that id as Last-Event-ID and the server resumes right after it, so nothing repeats and
// nothing is lost. Lines are appended as HTML in chunks of CHUNK lines; chunks out of view skip
// layout and paint (content-visibility), which keeps a 100,000-line log responsive.
(function () {
  "use strict";
  const CHUNK = 500;
  const $ = function (id) { return document.getElementById(id); };
  const section = $("job"), logEl = $("log"), statusEl = $("status"), stepsEl = $("steps");
  const resultEl = $("result"), durationEl = $("duration"), linesEl = $("lines"), connEl = $("conn");
  const followEl = $("follow");
  const ansi = window.Ansi.newState();
  let chunk = null, inChunk = 0, total = 0, queue = [], scheduled = false, ended = false, opens = 0;

  function fmt(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const s = Math.floor(seconds % 60);
    return Math.floor(seconds / 60) + " min " + (s < 10 ? "0" : "") + s + " s";
  }

  function setStatus(status) {
    statusEl.textContent = status;
    statusEl.className = "badge " + status;
    section.dataset.status = status;
  }

  // --- steps ---------------------------------------------------------------------------
  function stepItem(name) {
    let li = stepsEl.querySelector('li[data-step="' + CSS.escape(name) + '"]');
    if (!li) {
      li = document.createElement("li");
      li.dataset.step = name;
      li.innerHTML = '<a href="#step-' + encodeURIComponent(name) + '"></a> <span class="dur"></span>';
      li.firstChild.textContent = name;
      stepsEl.appendChild(li);
    }
    return li;
  }

  function showStep(li, status, started, ended_) {
    li.className = "step " + status;
    li.dataset.started = started;
    li.dataset.ended = ended_ || "";
    const text = ended_ ? fmt(ended_ - started) : "";
    li.querySelector(".dur").textContent = text;
    const line = document.getElementById("step-" + li.dataset.step);
    if (line) line.querySelector(".dur").textContent = text ? " " + text : "";
  }

  function startStep(name, ts) {
    stepsEl.querySelectorAll("li.running").forEach(function (li) {
      showStep(li, "ok", parseFloat(li.dataset.started), ts);
    });
    showStep(stepItem(name), "running", ts, null);
  }

  function tick() {
    const now = Date.now() / 1000;
    stepsEl.querySelectorAll("li.running").forEach(function (li) {
      li.querySelector(".dur").textContent = fmt(Math.max(0, now - parseFloat(li.dataset.started)));
    });
  }

  // --- lines ---------------------------------------------------------------------------
  function lineHtml(entry) {
    const html = window.Ansi.toHtml(entry.t || "", ansi);
    if (entry.step) {
      return '<span class="step-line" id="step-' + window.Ansi.escape(entry.step) + '">' + html +
        '<span class="dur"></span></span>';
    }
    if (entry.end) return '<span class="end end-' + window.Ansi.escape(entry.end) + '">' + html + "</span>";
    return html;
  }

  function atBottom() { return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 60; }

  function flush() {
    scheduled = false;
    if (!queue.length) return;
    const stick = followEl.checked;
    let parts = [];
    const entries = queue;
    queue = [];
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i];
      if (!chunk || inChunk >= CHUNK) {
        if (parts.length) chunk.insertAdjacentHTML("beforeend", parts.join(""));
        parts = [];
        chunk = document.createElement("div");
        chunk.className = "chunk";
        logEl.appendChild(chunk);
        inChunk = 0;
      }
      parts.push(lineHtml(entry) + "\n");
      inChunk++;
      total++;
      if (entry.step) {
        chunk.insertAdjacentHTML("beforeend", parts.join(""));
        parts = [];
        startStep(entry.step, parseFloat(entry.ts));
      }
    }
    if (parts.length) chunk.insertAdjacentHTML("beforeend", parts.join(""));
    linesEl.textContent = total.toLocaleString() + (total === 1 ? " line" : " lines");
    section.dataset.lines = String(total);
    if (stick) logEl.scrollTop = logEl.scrollHeight;
  }

  function schedule() {
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  }

  // --- the result ------------------------------------------------------------------------
  function finish(job) {
    flush();
    ended = true;
    if (job.status) setStatus(job.status);
    if (job.duration != null) durationEl.textContent = fmt(job.duration);
    (job.steps || []).forEach(function (s) {
      showStep(stepItem(s.name), s.status, s.started_at, s.ended_at);
    });
    resultEl.hidden = false;
    resultEl.className = "result " + (job.status || "");
    resultEl.textContent = "";
    if (job.status === "succeeded" && job.action === "deploy") {
      resultEl.append("Live at ");
      const a = document.createElement("a");
      a.href = job.env_url; a.textContent = job.env_url; a.target = "_blank"; a.rel = "noopener";
      resultEl.append(a);
    } else if (job.status === "succeeded") {
      resultEl.textContent = "Torn down: " + job.env_url + " no longer exists.";
    } else if (job.status === "superseded") {
      resultEl.textContent = "Superseded by a newer job for this branch; this one changed nothing.";
    } else {
      resultEl.textContent = (job.action === "teardown" ? "Teardown failed: " : "Deploy failed: ") +
        (job.error || "see the log above");
    }
    connEl.textContent = "";
    section.dataset.done = "1";
  }

  const source = new EventSource(section.dataset.events);
  source.addEventListener("open", function () {
    opens++;
    connEl.textContent = ended ? "" : " · live";
  });
  source.addEventListener("error", function () {
    if (!ended) connEl.textContent = " · reconnecting…";
  });
  source.addEventListener("lines", function (ev) {
    const batch = JSON.parse(ev.data);
    if (section.dataset.status === "queued") setStatus("running");
    for (let i = 0; i < batch.length; i++) queue.push(batch[i]);
    schedule();
  });
  source.addEventListener("end", function (ev) {
    source.close();
    finish(JSON.parse(ev.data || "{}"));
  });
  setInterval(tick, 1000);
  logEl.addEventListener("scroll", function () { followEl.checked = atBottom(); }, { passive: true });
  followEl.addEventListener("change", function () { if (followEl.checked) logEl.scrollTop = logEl.scrollHeight; });
  window.mirageLog = { source: source, lines: function () { return total; }, opens: function () { return opens; } };
})();
