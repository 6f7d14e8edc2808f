// dashboard.js: the facilitator's dashboard.
// - Copy buttons: a button with data-copy="ID" copies the value of that
//   input and says so.
// - "New lab" forms (form.reset-lab): asks first, posts the way htmx does
//   and shows the answer in #dash-msg (the row may be redrawn meanwhile).
(function () {
  "use strict";

  function say(text, error) {
    var msg = document.getElementById("dash-msg");
    if (!msg) return;
    msg.textContent = text;
    msg.classList.toggle("error", !!error);
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button[data-copy]");
    if (!b) return;
    var input = document.getElementById(b.getAttribute("data-copy"));
    var note = b.parentNode.querySelector(".copied");
    if (!input) return;
    function done(ok) { if (note) note.textContent = ok ? "copied" : "select the link and copy it"; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () { done(true); }, function () { input.select(); done(document.execCommand("copy")); });
    } else {
      input.select();
      done(document.execCommand("copy"));
    }
  });

  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (!f.classList || !f.classList.contains("reset-lab")) return;
    e.preventDefault();
    var name = f.getAttribute("data-name") || "";
    if (!window.confirm("Give " + name + " a new lab? Their current lab is dropped; their runs and progress are kept.")) return;
    fetch(f.action, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true" },
      body: new URLSearchParams(new FormData(f)).toString() })
      .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
      .then(function (res) {
        if (res.ok) {
          var t = document.createElement("template");
          t.innerHTML = res.text;
          say(t.content.textContent.trim(), false);
          return;
        }
        var why = "refused";
        try { why = JSON.parse(res.text).error || why; } catch (err) { /* not JSON */ }
        say(name + ": " + why, true);
      })
      .catch(function () { say("no answer from the server", true); });
  });
})();
