// a11y.js: every block that scrolls inside a page can be scrolled from the
// keyboard. A block whose content overflows it (a wide code block, a
// table, the request log) and that holds nothing focusable gets
// tabindex=0, a role and a name, so Tab reaches it and the arrow keys
// scroll it. Checked again after every swap and resize.
(function () {
  "use strict";
  var FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]";

  function name(el) {
    if (el.tagName === "PRE") return "code, scrolls";
    var cap = el.querySelector("caption, h3, h4, [aria-label]");
    var label = cap ? (cap.getAttribute("aria-label") || cap.textContent) : "";
    label = label.replace(/\s+/g, " ").trim();
    return (label ? label + ", " : "") + "scrolls";
  }

  function scan() {
    var main = document.querySelector("main") || document.body;
    var all = main.querySelectorAll("*");
    for (var i = 0; i < all.length; i++) {
      var el = all[i];
      if (el.hasAttribute("tabindex") && !el.hasAttribute("data-a11y-scroll")) continue;
      var wide = el.scrollWidth > el.clientWidth + 1, tall = el.scrollHeight > el.clientHeight + 1;
      if (!wide && !tall) {
        if (el.hasAttribute("data-a11y-scroll")) {
          el.removeAttribute("tabindex");
          el.removeAttribute("role");
          el.removeAttribute("aria-label");
          el.removeAttribute("data-a11y-scroll");
        }
        continue;
      }
      var cs = getComputedStyle(el);
      var scrolls = (wide && /auto|scroll/.test(cs.overflowX)) || (tall && /auto|scroll/.test(cs.overflowY));
      if (!scrolls || el.hasAttribute("data-a11y-scroll") || el.querySelector(FOCUSABLE)) continue;
      el.setAttribute("tabindex", "0");
      el.setAttribute("data-a11y-scroll", "");
      if (!el.getAttribute("role")) el.setAttribute("role", "group");
      if (!el.getAttribute("aria-label")) el.setAttribute("aria-label", name(el));
    }
  }

  var timer = null;
  function later() {
    clearTimeout(timer);
    timer = setTimeout(scan, 150);
  }
  window.rlslabA11yScan = scan;
  document.addEventListener("DOMContentLoaded", scan);
  document.addEventListener("htmx:afterSettle", later);
  document.addEventListener("htmx:wsAfterMessage", later);
  window.addEventListener("resize", later);
})();
