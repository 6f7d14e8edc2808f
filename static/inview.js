// inview.js: keeps on screen what the run is about, after every frame.
// - In the presenter view, whose page does not scroll: the request log's
//   panel stays scrolled to its first LEAK row (else its newest row), and
//   the timeline's to the leak's block and lane, else to its newest events
//   and the lane of the backend the narration names.
// - On every page with a live view, in a single-step run: the page scrolls,
//   as little as it can, so that the pool connection box and the timeline
//   lane of the backend the narration names are on screen, below the
//   pinned outcome bar. The lab's owner, whose Step button is then off
//   screen, gets a "Next step" button pinned at the bottom right that
//   presses it (#step-dock), so stepping never means scrolling back up.
(function () {
  "use strict";

  // narratedPID is the backend the current narration names, or "".
  function narratedPID() {
    var n = document.querySelector("#status .narration");
    var m = n ? n.textContent.match(/backend (\d+)/) : null;
    return m ? m[1] : "";
  }

  // reveal scrolls box up or down, as little as it can, so that el is
  // inside it below the first top pixels (a pinned head row).
  function reveal(box, el, top) {
    if (!box || !el) return;
    var b = box.getBoundingClientRect(), r = el.getBoundingClientRect();
    if (r.top < b.top + top) box.scrollTop -= b.top + top - r.top;
    else if (r.bottom > b.bottom) box.scrollTop += Math.min(r.bottom - b.bottom, r.top - b.top - top);
  }

  // revealX scrolls box sideways so that el is inside it, else to its
  // right end (the newest events).
  function revealX(box, el) {
    if (!box) return;
    box.scrollLeft = box.scrollWidth;
    if (!el) return;
    var b = box.getBoundingClientRect(), r = el.getBoundingClientRect();
    if (r.left < b.left + 4) box.scrollLeft -= b.left + 4 - r.left;
  }

  function presenter() {
    var log = document.querySelector("#requests .table-scroll");
    if (log) {
      var row = log.querySelector('.req-row[data-leak="true"]') || log.querySelector(".req-row[data-seq]:last-child");
      var head = log.querySelector(".req-head");
      reveal(log, row, head ? head.getBoundingClientRect().height : 0);
    }
    var wrap = document.querySelector("#timeline .tl-wrap");
    if (wrap) {
      var leak = wrap.querySelector(".tl-block.tl-leak");
      var pid = narratedPID();
      var lane = (leak && leak.closest("g.tl-lane")) || (pid && document.getElementById("tl-lane-" + pid));
      revealX(wrap.querySelector(".tl-scroll"), leak);
      reveal(wrap, lane, 0);
    }
  }

  // stepView scrolls the page so that the narrated backend's box and lane
  // are on screen in a single-step run.
  function stepView() {
    if (!inStep()) return;
    var pid = narratedPID();
    if (!pid) return;
    var els = [document.getElementById("tl-lane-" + pid), document.querySelector('#conns .conn[data-pid="' + pid + '"]')];
    var top = Infinity, bottom = -Infinity;
    els.forEach(function (el) {
      if (!el) return;
      var r = el.getBoundingClientRect();
      if (r.height === 0) return;
      top = Math.min(top, r.top);
      bottom = Math.max(bottom, r.bottom);
    });
    if (top === Infinity) return;
    // Below whatever is pinned at the top: the outcome bar, the presenter's head.
    var above = 0;
    document.querySelectorAll("#outcome, #present-head").forEach(function (el) {
      var p = getComputedStyle(el).position;
      if (p !== "sticky" && p !== "fixed") return;
      var r = el.getBoundingClientRect();
      if (r.top <= 1) above = Math.max(above, r.bottom);
    });
    var room = window.innerHeight - above;
    var delta = 0;
    if (bottom - top > room || top < above) delta = top - above - 8;
    else if (bottom > window.innerHeight) delta = bottom - window.innerHeight + 8;
    if (delta !== 0) window.scrollBy(0, delta);
  }

  // inStep reports whether the live view shows a single-step run going on.
  function inStep() {
    var status = document.getElementById("status");
    return !!status && status.getAttribute("data-speed") === "step" && status.getAttribute("data-status") === "running";
  }

  // stepDock shows the pinned "Next step" button while a single-step run
  // goes on and the owner's Step button is off screen, and hides it
  // otherwise. Watchers have no Step button, so they get none.
  function stepDock() {
    var step = document.getElementById("step");
    var dock = document.getElementById("step-dock");
    if (!step) {
      if (dock) dock.hidden = true;
      return;
    }
    if (!dock) {
      dock = document.createElement("button");
      dock.type = "button";
      dock.id = "step-dock";
      dock.className = "primary step-dock";
      dock.textContent = "Next step \u25B6";
      dock.setAttribute("aria-label", "Next step (the Step button, further up)");
      dock.hidden = true;
      dock.addEventListener("click", function () { document.getElementById("step").click(); });
      document.body.appendChild(dock);
    }
    var r = step.getBoundingClientRect();
    var off = r.height === 0 || r.bottom < 0 || r.top > window.innerHeight;
    dock.hidden = !(inStep() && off);
  }

  // update brings into view what the current frame is about, then marks
  // the body with the frame's version (data-inview), which the browser
  // tests wait for.
  function update() {
    if (document.body.classList.contains("present")) presenter();
    stepView();
    stepDock();
    var status = document.getElementById("status");
    if (status) document.body.setAttribute("data-inview", status.getAttribute("data-version") || "");
  }

  var pending = false;
  function later() {
    if (pending) return;
    pending = true;
    // After htmx has settled the frame's swaps.
    requestAnimationFrame(function () { setTimeout(function () { pending = false; update(); }, 30); });
  }
  document.addEventListener("DOMContentLoaded", later);
  document.addEventListener("htmx:wsAfterMessage", later);
  window.addEventListener("resize", later);
  window.addEventListener("scroll", function () { if (document.getElementById("step-dock") || inStep()) stepDock(); }, {passive: true});
})();
