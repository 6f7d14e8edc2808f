// predict.js: a lesson's prediction questions beside its run form. Only the
// question about the variant picked in the run form shows, and Run stays
// disabled until that question is answered (the answer is kept by the
// server and checked against the run's request log).
(function () {
  "use strict";
  function gate() {
    var form = document.querySelector("form.run-form");
    var box = document.getElementById("predictions");
    if (!form || !box) return;
    var picked = form.querySelector("input[name=variant]:checked");
    var variant = picked ? picked.value : "";
    var open = false;
    box.querySelectorAll(".predict-item").forEach(function (el) {
      var mine = el.getAttribute("data-variant") === variant;
      el.hidden = !mine;
      if (mine && el.classList.contains("predict-ask")) open = true;
    });
    var run = document.getElementById("run");
    if (run) {
      run.disabled = open;
      run.title = open ? "Answer the prediction first" : "";
    }
  }
  document.addEventListener("change", function (e) {
    if (e.target && e.target.name === "variant") gate();
  });
  document.addEventListener("htmx:afterSettle", gate);
  document.addEventListener("DOMContentLoaded", gate);
})();
