// order-policy console: progressive enhancements only; every page works without this file.
"use strict";

(function () {
  var page = document.body.getAttribute("data-page");

  // Matrix: live filtering (the form's Apply button filters on the server without JavaScript).
  function filterMatrix() {
    var table = document.getElementById("matrix");
    if (!table) { return; }
    var action = document.getElementById("filter-action").value;
    var method = document.getElementById("filter-method").value;
    var outcome = document.getElementById("filter-outcome").value;
    var text = document.getElementById("filter-text").value.trim().toLowerCase();
    var shown = 0;
    table.querySelectorAll("tbody").forEach(function (group) {
      var visible = 0;
      group.querySelectorAll("tr.row").forEach(function (row) {
        var ok = (!action || row.dataset.action === action) &&
                 (!method || row.dataset.method === method) &&
                 (!outcome || row.dataset.outcome === outcome) &&
                 (!text || row.dataset.text.indexOf(text) !== -1);
        row.hidden = !ok;
        if (ok) { visible += 1; }
      });
      group.hidden = visible === 0;
      shown += visible;
    });
    var count = document.getElementById("matrix-shown");
    if (count) { count.textContent = String(shown); }
  }

  // Matrix: a row's outcome opens its detail beside the table (without JavaScript: its own page).
  function showCell(link) {
    var panel = document.getElementById("cell-detail");
    if (!panel) { return true; }
    fetch(link.getAttribute("href") + "&fragment=1", {headers: {"Accept": "text/html"}})
      .then(function (response) { return response.text(); })
      .then(function (html) {
        panel.innerHTML = html;
        var close = document.createElement("button");
        close.type = "button";
        close.className = "close";
        close.textContent = "Close";
        close.addEventListener("click", function () { hideCell(link); });
        panel.insertBefore(close, panel.firstChild);
        panel.hidden = false;
        document.querySelectorAll("#matrix tr.selected").forEach(function (r) { r.classList.remove("selected"); });
        var row = link.closest("tr");
        if (row) { row.classList.add("selected"); }
        panel.focus();
      })
      .catch(function () { window.location.href = link.getAttribute("href"); });
    return false;
  }

  function hideCell(link) {
    var panel = document.getElementById("cell-detail");
    panel.hidden = true;
    panel.innerHTML = "";
    if (link) { link.focus(); }
  }

  if (page === "matrix" && document.getElementById("matrix")) {
    document.addEventListener("keydown", function (event) {
      var panel = document.getElementById("cell-detail");
      if (event.key === "Escape" && panel && !panel.hidden) {
        var selected = document.querySelector("#matrix tr.selected a.cell-link");
        hideCell(selected);
      }
    });
    ["filter-action", "filter-method", "filter-outcome"].forEach(function (id) {
      document.getElementById(id).addEventListener("change", filterMatrix);
    });
    document.getElementById("filter-text").addEventListener("input", filterMatrix);
    document.getElementById("matrix").addEventListener("click", function (event) {
      var link = event.target.closest("a.cell-link");
      if (!link) {
        var row = event.target.closest("tr.row");
        link = row ? row.querySelector("a.cell-link") : null;
      }
      if (link && !showCell(link)) { event.preventDefault(); }
    });
  }

  // Playground: choosing a sample loads it.
  var sample = document.getElementById("sample");
  if (sample) {
    sample.addEventListener("change", function () { document.getElementById("sample-form").submit(); });
  }

  // Reload: the console reloads changed files; pages that show only the bundle follow it.
  var generation = document.body.getAttribute("data-generation");
  function poll() {
    fetch("/generation", {cache: "no-store"})
      .then(function (response) { return response.ok ? response.text() : generation; })
      .then(function (now) {
        if (now.trim() === generation) { return; }
        var panel = document.getElementById("cell-detail");
        var follow = page === "bundle" || page === "compare" || (page === "matrix" && panel && panel.hidden);
        if (follow) {
          window.location.reload();
        } else {
          document.getElementById("reloaded").hidden = false;
        }
      })
      .catch(function () { /* the console stopped: keep the page as it is */ });
  }
  window.setInterval(poll, 2000);
})();
