// replay.js: the replay player (a recording's page, its embedded version
// and its export): play, pause, step, scrub.
// - On rlslab's pages it asks the server for each frame
//   (/runs/{id}/frames/{n}) and swaps it in.
// - In an exported file (data-source="embedded") every frame is in the
//   page: #replay-data holds the parts the frames are made of (each
//   section of the live view and each item in it, kept once however many
//   frames hold it) and, for each frame, the list of its parts. A frame is
//   drawn by swapping in all its sections, then putting their items in
//   place, with no request to anywhere.
(function () {
  "use strict";

  // fragment parses html into its first element; inSVG parses it as the
  // inside of an <svg> element and returns its nodes.
  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content.firstElementChild;
  }
  function inSVG(html) {
    var t = document.createElement("template");
    t.innerHTML = "<svg>" + html + "</svg>";
    var svg = t.content.firstElementChild;
    return svg ? Array.prototype.slice.call(svg.childNodes) : [];
  }

  // embedded returns a source that draws frame n from the page's data.
  function embedded(target) {
    var script = document.getElementById("replay-data");
    var data = JSON.parse(script.textContent);
    return function (n) {
      var frame = data.frames[n];
      var root = target.querySelector(".replay-frame");
      var live = root && root.querySelector("#live");
      if (!frame || !live) return Promise.reject(new Error("no frame " + n));
      for (var i = 0; i < frame.p.length; i++) {
        var p = data.parts[frame.p[i]];
        var old = document.getElementById(p.id);
        if (!p.s) { // a section, without its items
          var el = fragment(p.h);
          if (!el) continue;
          if (old) old.replaceWith(el); else live.appendChild(el);
        } else if (p.c) { // an item of a container: the section came without it
          var item = fragment(p.h);
          var box = document.getElementById(p.c);
          if (!item) continue;
          if (old) old.replaceWith(item); else if (box) box.appendChild(item);
        } else if (p.w) { // the inside of an element of the section (a timeline lane)
          if (old) old.replaceChildren.apply(old, p.w === "svg" ? inSVG(p.h) : Array.prototype.slice.call(fragment("<" + p.w + ">" + p.h + "</" + p.w + ">").childNodes));
        } else if (old) { // an item in the place its section holds for it
          var it = fragment(p.h);
          if (it) old.replaceWith(it);
        }
      }
      root.setAttribute("data-frame", String(n));
      var at = root.querySelector(".replay-at");
      if (at) at.textContent = "frame " + (n + 1) + " of " + data.frames.length + " · " + frame.at + " ms into the run";
      return Promise.resolve();
    };
  }

  // fetched returns a source that asks the server for frame n.
  function fetched(run, target) {
    return function (n) {
      return fetch("/runs/" + run + "/frames/" + n).then(function (r) {
        if (!r.ok) throw new Error("frame " + n + ": " + r.status);
        return r.text();
      }).then(function (html) { return function () { target.innerHTML = html; }; });
    };
  }

  function player(root) {
    var total = parseInt(root.getAttribute("data-frames"), 10);
    var at = (root.getAttribute("data-at") || "").split(",").map(Number);
    var scrub = document.getElementById("replay-scrub");
    var pos = document.getElementById("replay-pos");
    var play = document.getElementById("replay-play");
    var target = document.getElementById("replay-target");
    var draw = root.getAttribute("data-source") === "embedded" ? embedded(target) : null;
    var get = draw ? null : fetched(root.getAttribute("data-run"), target);
    var current = parseInt(scrub.value, 10), timer = null, want = current;
    function show(n) {
      n = Math.max(0, Math.min(total - 1, n));
      want = n;
      scrub.value = n;
      pos.textContent = (n + 1) + " / " + total;
      if (draw) {
        return draw(n).then(function () { current = n; });
      }
      return get(n).then(function (swap) {
        if (want !== n) return; // a later frame was asked for meanwhile
        swap();
        current = n;
      });
    }
    function pause() { clearTimeout(timer); timer = null; play.textContent = "Play"; }
    function tick() {
      if (current >= total - 1) { pause(); return; }
      var gap = Math.max(60, Math.min(800, (at[current + 1] || 0) - (at[current] || 0)));
      timer = setTimeout(function () { show(current + 1).then(function () { if (timer) tick(); }); }, gap);
    }
    play.addEventListener("click", function () {
      if (timer) { pause(); return; }
      if (current >= total - 1) current = -1;
      play.textContent = "Pause";
      timer = -1;
      if (current < 0) { show(0).then(tick); } else { tick(); }
    });
    document.getElementById("replay-back").addEventListener("click", function () { pause(); show(want - 1); });
    document.getElementById("replay-fwd").addEventListener("click", function () { pause(); show(want + 1); });
    scrub.addEventListener("input", function () { pause(); show(parseInt(scrub.value, 10)); });
    document.addEventListener("keydown", function (e) {
      if (e.target === scrub) return;
      if (e.key === " ") { e.preventDefault(); play.click(); }
      else if (e.key === "ArrowRight") { e.preventDefault(); pause(); show(want + 1); }
      else if (e.key === "ArrowLeft") { e.preventDefault(); pause(); show(want - 1); }
    });
  }

  function start() {
    var pl = document.getElementById("player");
    if (pl && !pl.rlslabPlayer) {
      pl.rlslabPlayer = true;
      player(pl);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
