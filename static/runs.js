// runs.js: a lab's "recent runs" panel follows the lab. When the live view
// shows that a run ended (the status bar says done or failed at a version
// newer than the last one seen ended), each panel asks for its list again,
// and a few more times while the new run's recording is still being saved.
(function () {
  "use strict";
  var seen = -1; // the status bar's version when a run was last seen ended

  function endedVersion() {
    var bar = document.getElementById("status");
    if (!bar) return -1;
    var st = bar.getAttribute("data-status");
    if (st !== "done" && st !== "failed") return -1;
    var v = parseInt(bar.getAttribute("data-version"), 10);
    return isNaN(v) ? -1 : v;
  }

  function newest(box) {
    var list = box.querySelector("[data-newest]");
    return list ? list.getAttribute("data-newest") : "";
  }

  function reload(box, before, tries) {
    fetch(box.getAttribute("hx-get"), { headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        box.innerHTML = html;
        if (newest(box) === before && tries > 1) {
          setTimeout(function () { reload(box, before, tries - 1); }, 300);
        }
      })
      .catch(function () {});
  }

  document.addEventListener("DOMContentLoaded", function () { seen = endedVersion(); });
  document.addEventListener("htmx:wsAfterMessage", function () {
    var v = endedVersion();
    if (v < 0 || v <= seen) return;
    seen = v;
    document.querySelectorAll(".recent-runs-list[hx-get]").forEach(function (box) {
      reload(box, newest(box), 10);
    });
  });
})();
