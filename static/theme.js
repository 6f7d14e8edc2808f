// theme.js: applies the remembered colour theme before the page draws (no
// flash), and makes the header's button switch it. Without a remembered
// choice the page follows prefers-color-scheme.
(function () {
  "use strict";
  var key = "rlslab-theme";
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem(key); } catch (e) { /* storage off */ }
  if (saved === "dark" || saved === "light") root.setAttribute("data-theme", saved);

  function current() {
    var t = root.getAttribute("data-theme");
    if (t) return t;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("#theme-toggle") : null;
    if (!b) return;
    var next = current() === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    try { localStorage.setItem(key, next); } catch (err) { /* storage off */ }
  });
})();
