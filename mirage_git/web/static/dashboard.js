// Keep the dashboard current without a reload: poll the live fragment with If-None-Match
// (a 304 costs nothing) and swap it in when it changed. Also: the filter box, and a confirm
// before anything destructive.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const filter = document.getElementById("filter");
  let etag = null, busy = false;

  function applyFilter() {
    if (!filter || !live) return;
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    live.querySelectorAll("tr.env").forEach(function (tr) {
      const hay = (tr.dataset.app + " " + tr.dataset.branch + " " + tr.dataset.status + " " + tr.dataset.host).toLowerCase();
      tr.hidden = !words.every(function (w) { return hay.indexOf(w) >= 0; });
    });
  }

  async function poll() {
    if (busy || !live) return;
    busy = true;
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const resp = await fetch(live.dataset.src, { headers: headers, credentials: "same-origin" });
      if (resp.status === 200) {
        const html = await resp.text();
        if (!live.contains(document.activeElement) || document.activeElement === document.body) {
          etag = resp.headers.get("ETag");
          live.innerHTML = html;
          applyFilter();
        }
        live.dataset.updated = String(Date.now());
      } else if (resp.status === 401 || resp.redirected) {
        location.reload();
      }
    } catch (e) {
      /* the service restarts, the laptop sleeps: try again on the next tick */
    } finally {
      busy = false;
    }
  }

  document.addEventListener("submit", function (ev) {
    const msg = ev.target.dataset && ev.target.dataset.confirm;
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });
  if (filter) filter.addEventListener("input", applyFilter);
  if (live) {
    setInterval(function () { if (!document.hidden) poll(); }, 2000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
  }
})();
