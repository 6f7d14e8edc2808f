// rlslab.js: the little the pages need beyond htmx.
// - Shows the answer of a control request (errors included) under the controls.
// - On the lab page, keeps only the chosen scenario's variants and parameters enabled.
// - Records when each finished request row first appears in the DOM
//   (window.rlslabRowLatencies: milliseconds from the server's finished_at),
//   which the browser test reads to measure frame latency.
(function () {
  "use strict";
  window.rlslabRowLatencies = [];
  var seen = {};

  function recordRows(root) {
    var rows = root.querySelectorAll ? root.querySelectorAll("tr[data-finished-at]") : [];
    var now = Date.now();
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var fin = parseInt(r.getAttribute("data-finished-at"), 10);
      var live = document.getElementById("live");
      var key = (live ? live.getAttribute("data-lab-id") : "") + ":" + r.getAttribute("data-seq") + ":" + fin;
      if (fin > 0 && !seen[key]) {
        seen[key] = true;
        window.rlslabRowLatencies.push(now - fin);
      }
    }
  }

  function syncScenario(form) {
    var sel = form.querySelector("select[name=scenario]");
    if (!sel) return;
    var fieldsets = form.querySelectorAll("fieldset.variants");
    for (var i = 0; i < fieldsets.length; i++) {
      var fs = fieldsets[i];
      var on = fs.getAttribute("data-scenario") === sel.value;
      fs.hidden = !on;
      var inputs = fs.querySelectorAll("input");
      for (var j = 0; j < inputs.length; j++) inputs[j].disabled = !on;
      if (on && !fs.querySelector("input[type=radio]:checked")) {
        var first = fs.querySelector("input[type=radio]");
        if (first) first.checked = true;
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    new MutationObserver(function (muts) {
      for (var i = 0; i < muts.length; i++) {
        for (var j = 0; j < muts[i].addedNodes.length; j++) recordRows(muts[i].addedNodes[j]);
      }
    }).observe(document.body, { childList: true, subtree: true });
    recordRows(document);
    var forms = document.querySelectorAll("form.run-form");
    for (var i = 0; i < forms.length; i++) {
      (function (form) {
        syncScenario(form);
        var sel = form.querySelector("select[name=scenario]");
        if (sel) sel.addEventListener("change", function () { syncScenario(form); });
      })(forms[i]);
    }
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    var msg = document.getElementById("control-msg");
    if (!msg || !e.detail || !e.detail.xhr) return;
    var text = "";
    try {
      var body = JSON.parse(e.detail.xhr.responseText);
      text = body.error ? body.error : (body.status ? "OK: " + body.status : "OK");
    } catch (err) {
      text = e.detail.successful ? "OK" : "Request failed (" + e.detail.xhr.status + ")";
    }
    msg.textContent = text;
    msg.className = "control-msg " + (e.detail.successful ? "ok" : "bad");
    clearTimeout(msg.rlslabTimer);
    if (e.detail.successful) {
      msg.rlslabTimer = setTimeout(function () { msg.textContent = ""; }, 4000);
    }
  });
})();
