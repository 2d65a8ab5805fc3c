// Tail a job's log over server-sent events. The browser resends Last-Event-ID when it
// reconnects, so the server resumes exactly after the last line we got.
(function () {
  "use strict";
  const section = document.getElementById("job");
  const logEl = document.getElementById("log");
  const statusEl = document.getElementById("status");
  const resultEl = document.getElementById("result");
  const durationEl = document.getElementById("duration");
  const commitEl = document.getElementById("commit");
  let pending = [];
  let scheduled = false;

  function atBottom() { return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40; }

  function flush() {
    scheduled = false;
    const stick = atBottom();
    const frag = document.createDocumentFragment();
    for (const entry of pending) {
      const line = document.createElement("span");
      line.textContent = entry.t + "\n";
      if (entry.step) line.className = "step";
      if (entry.end) line.className = "end-" + entry.end;
      frag.appendChild(line);
    }
    pending = [];
    logEl.appendChild(frag);
    if (stick) logEl.scrollTop = logEl.scrollHeight;
  }

  function setStatus(status) {
    statusEl.textContent = status;
    statusEl.className = "badge " + status;
    section.dataset.status = status;
  }

  const source = new EventSource(section.dataset.events);
  source.addEventListener("line", function (ev) {
    const entry = JSON.parse(ev.data);
    if (section.dataset.status === "queued") setStatus("running");
    pending.push(entry);
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  });
  source.addEventListener("end", function (ev) {
    source.close();
    flush();
    const job = JSON.parse(ev.data || "{}");
    if (job.status) setStatus(job.status);
    if (job.duration != null) durationEl.textContent = job.duration.toFixed(1) + " s";
    if (job.commit) commitEl.textContent = job.commit;
    resultEl.textContent = job.error ? job.error : (job.status === "succeeded" && job.action === "deploy" ? "live at " + job.env_url : "");
    section.dataset.done = "1";
  });
})();
