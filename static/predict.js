// predict.js: a lesson's prediction questions, between the variants and
// Run. Only the question about the variant picked in the run form shows.
// While that question is unanswered Run waits, and says why next to the
// button; Run is never disabled, so a click is never ignored: it either
// runs or points at the question (the answer is kept by the server and
// checked against the run's request log).
(function () {
  "use strict";
  var WAIT = "Run waits for your prediction: answer the question above, then press Run.";

  // waiting returns the unanswered question about the picked variant, or
  // null when Run may go.
  function waiting() {
    var form = document.getElementById("run-form");
    var box = document.getElementById("predictions");
    if (!form || !box) return null;
    var picked = form.querySelector("input[name=variant]:checked");
    var variant = picked ? picked.value : "";
    var open = null;
    box.querySelectorAll(".predict-item").forEach(function (el) {
      var mine = el.getAttribute("data-variant") === variant;
      el.hidden = !mine;
      if (mine && el.classList.contains("predict-ask")) open = el;
    });
    return open;
  }

  function gate() {
    var open = waiting();
    var run = document.getElementById("run");
    var why = document.getElementById("run-why");
    if (!run || !why) return;
    run.setAttribute("aria-disabled", open ? "true" : "false");
    run.classList.toggle("waiting", !!open);
    why.textContent = open ? WAIT : "";
    why.classList.remove("nudge");
  }

  // A submit of the run form while its question is open shows the reason
  // and takes the learner to the question instead of running. It is
  // stopped in the capture phase, before htmx sees it.
  document.addEventListener("submit", function (e) {
    if (!e.target || e.target.id !== "run-form") return;
    var open = waiting();
    if (!open) return;
    e.preventDefault();
    e.stopPropagation();
    var why = document.getElementById("run-why");
    if (why) {
      why.textContent = WAIT;
      why.classList.remove("nudge");
      void why.offsetWidth; // restart the highlight
      why.classList.add("nudge");
    }
    open.scrollIntoView({ block: "nearest" });
    var first = open.querySelector("input[type=radio]");
    if (first) first.focus({ preventScroll: true });
  }, true);
  document.addEventListener("change", function (e) {
    if (e.target && e.target.name === "variant") gate();
  });
  // reveal unfolds the lesson's sections that tell what a run shows, once
  // the learner has locked in a prediction or started a run: they were
  // folded so that nobody reads the answer before predicting it.
  function reveal() {
    document.querySelectorAll("details.reveal").forEach(function (d) { d.open = true; });
  }
  // Before the swap: a prediction form is replaced by its answer, and a
  // detached element's events no longer reach the document.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var el = e.detail && e.detail.elt, xhr = e.detail && e.detail.xhr;
    if (!el || !xhr || xhr.status < 200 || xhr.status >= 300) return;
    if (el.id === "run-form" || (el.classList && el.classList.contains("predict-ask"))) reveal();
  });
  document.addEventListener("htmx:afterSettle", gate);
  document.addEventListener("DOMContentLoaded", gate);
})();
