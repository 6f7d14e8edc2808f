// workshop.js: the little the presenter, watch and replay pages need.
// - Keeps the narration history: each frame's new narration line goes at
//   the end of #narration-history, oldest first (the last few lines are
//   kept), and the list stays scrolled to its newest line.
// - Presenter keys, for the lab's owner: Space run/step, arrows speed,
//   R reset, 1-9 variant, ? help.
// - A join form sent back with a 503 sends itself again (retryJoin).
// (The replay player is replay.js.)
(function () {
  "use strict";
  var HISTORY = 8;
  var SPEEDS = ["step", "0.25", "0.5", "1", "2", "4", "max"];

  // liveStatus reads the run's status from the live view's status bar.
  function liveStatus() {
    var s = document.getElementById("status") || document.getElementById("live");
    return s ? s.getAttribute("data-status") || "" : "";
  }

  function narrate() {
    var list = document.getElementById("narration-history");
    var live = document.getElementById("live");
    if (!list || !live) return;
    var n = live.querySelector(".narration");
    var text = n ? n.textContent.replace(/\s+/g, " ").trim() : "";
    var status = liveStatus();
    if (status === "running" && list.getAttribute("data-status") !== "running" && list.getAttribute("data-status") !== "queued") {
      list.textContent = ""; // a new run: a new story
    }
    list.setAttribute("data-status", status);
    if (!text || (list.lastElementChild && list.lastElementChild.textContent === text)) return;
    var li = document.createElement("li");
    li.textContent = text;
    list.appendChild(li);
    while (list.children.length > HISTORY) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  // post sends a control the way htmx does (HX-Request), so the server
  // answers with its message as an HTML fragment; a refusal is shown as
  // that fragment's text.
  function post(url, body) {
    var msg = document.getElementById("present-msg");
    fetch(url, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true", "HX-Current-URL": location.href }, body: body || "" })
      .then(function (r) {
        // The lab was gone and the control went to a new one: show it.
        var to = r.headers.get("HX-Redirect");
        if (to) location.href = to;
        return r.text().then(function (html) { return { ok: r.ok, html: html }; });
      })
      .then(function (res) {
        if (!msg) return;
        if (res.ok) { msg.textContent = ""; return; }
        var t = document.createElement("template");
        t.innerHTML = res.html;
        msg.textContent = t.content.textContent.trim() || "refused";
      })
      .catch(function () { if (msg) msg.textContent = "no answer from the server"; });
  }

  function presenter(root) {
    var lab = root.getAttribute("data-lab");
    var speed = 3; // "1"
    var keys = document.getElementById("variant-keys");
    var help = document.getElementById("present-help");
    var shown = document.getElementById("present-speed");
    var msg = document.getElementById("present-msg");
    function variants() { return keys ? keys.querySelectorAll("li[data-variant]") : []; }
    function chosen() { var c = keys && keys.querySelector("li.chosen"); return c ? c.getAttribute("data-variant") : ""; }
    function showSpeed() { if (shown) shown.textContent = SPEEDS[speed] === "step" ? "single-step" : SPEEDS[speed] === "max" ? "full speed" : SPEEDS[speed] + "×"; }
    function status() { return liveStatus(); }
    function setSpeed(d) {
      speed = Math.max(0, Math.min(SPEEDS.length - 1, speed + d));
      showSpeed();
      if (status() === "running") post("/labs/" + lab + "/speed", "speed=" + encodeURIComponent(SPEEDS[speed]));
    }
    showSpeed();
    document.addEventListener("keydown", function (e) {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      var t = e.target && e.target.tagName;
      if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") return;
      if (e.key === " ") {
        e.preventDefault();
        var st = status();
        if (st === "running" || st === "queued") {
          if (SPEEDS[speed] === "step") post("/labs/" + lab + "/step");
          else if (msg) msg.textContent = "running: ← down to single-step to step";
        } else {
          post("/labs/" + lab + "/runs", "scenario=" + encodeURIComponent(root.getAttribute("data-scenario")) +
            "&variant=" + encodeURIComponent(chosen()) + "&speed=" + encodeURIComponent(SPEEDS[speed]));
        }
      } else if (e.key === "ArrowRight") { e.preventDefault(); setSpeed(1); }
      else if (e.key === "ArrowLeft") { e.preventDefault(); setSpeed(-1); }
      else if (e.key === "r" || e.key === "R") { post("/labs/" + lab + "/reset"); }
      else if (e.key === "?") { if (help) help.hidden = !help.hidden; }
      else if (e.key === "Escape") { if (help) help.hidden = true; }
      else if (/^[1-9]$/.test(e.key)) {
        var vs = variants(), i = parseInt(e.key, 10) - 1;
        if (i < vs.length) {
          for (var j = 0; j < vs.length; j++) vs[j].classList.toggle("chosen", j === i);
        }
      }
    });
  }

  // retryJoin sends again, after the seconds the server said, a join form
  // it sent back because the join could not be had for now (503); the
  // form carries the name and the number of the next try.
  function retryJoin() {
    var f = document.querySelector("form.join-form[data-retry]");
    if (!f) return;
    var n = parseInt(f.getAttribute("data-retry-in"), 10) || 1;
    setTimeout(function () {
      if (f.requestSubmit) f.requestSubmit(); else f.submit();
    }, n * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var p = document.getElementById("present");
    if (p && p.getAttribute("data-owner") === "yes") presenter(p);
    narrate();
    retryJoin();
  });
  document.addEventListener("htmx:wsAfterMessage", narrate);
})();
