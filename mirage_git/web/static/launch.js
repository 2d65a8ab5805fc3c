// Switching the app reloads the form for that app's parameters (the branch typed so far is kept).
(function () {
  "use strict";
  const select = document.getElementById("app");
  const branch = document.getElementById("branch");
  if (!select) return;
  select.addEventListener("change", function () {
    const q = new URLSearchParams({ app: select.value, branch: branch ? branch.value : "" });
    location.assign(select.dataset.switch + "?" + q.toString());
  });
})();
