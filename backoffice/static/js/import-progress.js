// Follows an import run: polls its JSON progress and updates the bar and numbers in place;
// when the run finishes, reloads the page to show its counts and report. Without JavaScript
// the page still shows the numbers as of its last load (no inline script: CSP-friendly).
(function () {
  "use strict";
  var box = document.getElementById("import-progress");
  if (!box || box.getAttribute("data-finished") === "true") {
    return;
  }
  var url = box.getAttribute("data-progress-url");
  var bar = document.getElementById("import-progress-bar");
  var styles = { queued: "secondary", running: "info", done: "success", failed: "danger" };
  var delay = 1500;

  function show(name, value) {
    var field = box.querySelector('[data-field="' + name + '"]');
    if (field) {
      field.textContent = String(value);
    }
  }

  function update(progress) {
    bar.value = progress.percent;
    bar.textContent = progress.percent + " %";
    show("percent", progress.percent);
    show("rows_read", progress.rows_read);
    show("bytes_read", progress.bytes_read);
    var badge = box.querySelector('[data-field="status"]');
    if (badge) {
      // The page carries each status's name in the reader's language (data-label-<status>).
      badge.textContent = badge.getAttribute("data-label-" + progress.status) || progress.status;
      badge.className = "badge badge-" + (styles[progress.status] || "secondary");
    }
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (progress) {
        update(progress);
        if (progress.finished) {
          window.location.reload();
        } else {
          window.setTimeout(poll, delay);
        }
      })
      .catch(function () {
        // Signed out, server restarting, network gone: back off; the Refresh link still works.
        delay = Math.min(delay * 2, 30000);
        window.setTimeout(poll, delay);
      });
  }

  window.setTimeout(poll, delay);
})();
