// rlslab.js: the little the pages need beyond htmx.
// - Lets the answer of a control (a sentence of HTML, errors included) show
//   under the controls, marked ok or bad.
// - On the lab page, keeps only the chosen scenario's variants and parameters enabled.
// - Keeps the timeline scrolled to its newest events unless the reader
//   scrolled it back.
// - Records when each finished request row first appears in the DOM
//   (window.rlslabRowLatencies: milliseconds from the server's finished_at),
//   which the browser test reads to measure frame latency.
(function () {
  "use strict";
  window.rlslabRowLatencies = [];
  var seen = {};

  function recordRow(r, now) {
    var fin = parseInt(r.getAttribute("data-finished-at"), 10);
    var live = document.getElementById("live");
    var key = (live ? live.getAttribute("data-lab-id") : "") + ":" + r.getAttribute("data-seq") + ":" + fin;
    if (fin > 0 && !seen[key]) {
      seen[key] = true;
      window.rlslabRowLatencies.push(now - fin);
    }
  }

  function recordRows(root) {
    if (!root.querySelectorAll) return;
    var now = Date.now();
    if (root.matches && root.matches(".req-row[data-finished-at]")) recordRow(root, now);
    var rows = root.querySelectorAll(".req-row[data-finished-at]");
    for (var i = 0; i < rows.length; i++) recordRow(rows[i], now);
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

  // The timeline's scroll box follows the newest events while its reader
  // has not scrolled it away from the right edge.
  var followTimeline = true;
  function followRight() {
    var box = document.querySelector("#timeline .tl-scroll");
    if (box && followTimeline) box.scrollLeft = box.scrollWidth;
  }
  window.addEventListener("resize", followRight);
  document.addEventListener("scroll", function (e) {
    var box = e.target;
    if (box && box.classList && box.classList.contains("tl-scroll")) {
      followTimeline = box.scrollLeft + box.clientWidth >= box.scrollWidth - 8;
    }
  }, true);

  document.addEventListener("DOMContentLoaded", function () {
    new MutationObserver(function (muts) {
      var timeline = false;
      for (var i = 0; i < muts.length; i++) {
        for (var j = 0; j < muts[i].addedNodes.length; j++) {
          var n = muts[i].addedNodes[j];
          recordRows(n);
          if (n.id === "timeline" || (n.closest && n.closest("#timeline"))) timeline = true;
        }
      }
      if (timeline) followRight();
    }).observe(document.body, { childList: true, subtree: true });
    recordRows(document);
    followRight();
    var forms = document.querySelectorAll("form.run-form");
    for (var i = 0; i < forms.length; i++) {
      (function (form) {
        syncScenario(form);
        var sel = form.querySelector("select[name=scenario]");
        if (sel) sel.addEventListener("change", function () { syncScenario(form); });
      })(forms[i]);
    }
  });

  // A control's refusal (400, 403, 409, 503) is a sentence to show too.
  // A lab that cannot be had says why in place of "Preparing your lab",
  // and the button stays to try again. When it is for now (503: all labs
  // in use, the database not answering) the page asks again by itself,
  // after 1 s, then 2, 4, up to 10 s, and says when.
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (!e.detail.target || e.detail.xhr.status < 400) return;
    if (e.detail.target.id === "control-msg") {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    } else if (e.detail.target.id === "lab-side") {
      var form = document.querySelector(".lab-pending");
      var p = form ? form.querySelector("p") : null;
      if (!p) return;
      p.className = "control-msg bad";
      var text = new DOMParser().parseFromString(e.detail.xhr.responseText, "text/html").body.textContent.trim();
      text = text.charAt(0).toUpperCase() + text.slice(1); // a sentence, as the page shows it
      if (e.detail.xhr.status !== 503 || !window.htmx) {
        p.textContent = text;
        return;
      }
      var wait = form.rlslabWait || 1000;
      form.rlslabWait = Math.min(wait * 2, 10000);
      p.textContent = text + " (rlslab asks again in " + Math.round(wait / 1000) + " s.)";
      clearTimeout(form.rlslabRetry);
      form.rlslabRetry = setTimeout(function () {
        htmx.ajax("POST", form.getAttribute("hx-post"), {source: form, target: "#lab-side", swap: "outerHTML"});
      }, wait);
    }
  });

  document.addEventListener("htmx:afterRequest", function (e) {
    var msg = document.getElementById("control-msg");
    if (!msg || !e.detail || !e.detail.xhr || e.detail.target !== msg) return;
    if (e.detail.xhr.status === 0) msg.textContent = "The server did not answer.";
    msg.className = "control-msg " + (e.detail.xhr.status < 400 && e.detail.xhr.status > 0 ? "ok" : "bad");
    clearTimeout(msg.rlslabTimer);
    if (e.detail.xhr.status < 400) {
      msg.rlslabTimer = setTimeout(function () { msg.textContent = ""; }, 4000);
    }
  });
})();
