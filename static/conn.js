// conn.js: a page with a live websocket (a lesson, a lab, the presenter and
// watch views, a dashboard) notices when it loses it, says so, and gets it
// back.
// - The socket's close event (rlslab stopped or restarted, the network
//   went away, the lab closed) shows "Connection lost — reconnecting" at
//   once, as does the browser going offline.
// - Then it asks rlslab, with backoff (0.5 s doubling up to 10 s, with
//   jitter), whether it answers and whether the lab is still there
//   (state.json; /healthz for a socket that is not a lab's). htmx's
//   websocket extension reconnects an abnormally closed socket by itself
//   after the same backoff; a socket the server closed is opened again
//   here once rlslab answers. Back, the notice says so and goes.
// - A lab that is gone (it expired, or rlslab restarted and it went with
//   it) will not come back: the page stops trying, says so and says what
//   to do: Run (or any control) carries on in a new lab, and the runs made
//   so far are kept; a button opens the new lab at once.
(function () {
  "use strict";
  var MIN = 500, MAX = 10000;
  var RETRIED = [1006, 1011, 1012, 1013]; // the close codes htmx's extension retries by itself

  // delay is the wait before try n (0, 1, ...): doubling, capped, and
  // jittered so that a room of browsers does not come back at once.
  function delay(n) {
    var d = Math.min(MAX, MIN * Math.pow(2, n));
    return d / 2 + Math.random() * d / 2;
  }
  if (window.htmx) window.htmx.config.wsReconnectDelay = delay;

  var unloading = false, gone = false, probing = false, open = false, hideTimer = null;
  window.addEventListener("pagehide", function () { unloading = true; });
  window.addEventListener("beforeunload", function () { unloading = true; });

  function banner() {
    var b = document.getElementById("conn-status");
    if (!b) {
      b = document.createElement("p");
      b.id = "conn-status";
      b.setAttribute("role", "status");
      b.setAttribute("aria-live", "assertive");
      document.body.appendChild(b);
    }
    return b;
  }
  function say(kind, text) {
    var b = banner();
    clearTimeout(hideTimer);
    b.className = "conn-status conn-" + kind;
    b.setAttribute("data-state", kind);
    b.textContent = text;
    b.hidden = false;
  }

  function labOf(el) {
    var m = (el.getAttribute("ws-connect") || "").match(/^\/labs\/([^/?#]+)\//);
    return m ? decodeURIComponent(m[1]) : "";
  }

  // stop keeps htmx's extension from trying a socket again: it stops once
  // the socket's element has left the page, so the element is swapped for
  // a copy without the socket.
  function stop(el) {
    var copy = el.cloneNode(true);
    copy.removeAttribute("ws-connect");
    copy.removeAttribute("hx-ext");
    el.replaceWith(copy);
  }

  // labGone says that the lab is gone and what to do.
  function labGone(el) {
    gone = true;
    stop(el);
    // Only the lab's owner has controls; a watcher has nothing to carry on.
    var owner = !!document.querySelector("form.run-form, #present[data-owner=yes]");
    say("gone", owner ? "Connection lost: this lab is gone (it expired, or rlslab restarted). Press Run to carry on in a new lab; your runs are kept." :
      "Connection lost: this lab is gone (it expired, or rlslab restarted), so there is nothing more to watch here.");
    var live = document.getElementById("live");
    if (!live || document.getElementById("lab-gone")) return;
    var m = location.pathname.match(/^\/lessons\/([^/]+)/);
    var box = document.createElement("form");
    box.id = "lab-gone";
    box.className = "lab-gone";
    box.method = "post";
    box.action = "/labs" + (m ? "?lesson=" + encodeURIComponent(m[1]) : "");
    var p = document.createElement("p");
    p.textContent = "This lab is gone: it expired after a while without you, or rlslab restarted. What you see below is its last picture. " +
      "Run carries on in a new lab, and your recent runs are kept.";
    var b = document.createElement("button");
    b.type = "submit";
    b.className = "primary";
    b.textContent = "Open a new lab";
    box.appendChild(p);
    box.appendChild(b);
    live.parentNode.insertBefore(box, live);
  }

  // probe asks rlslab, with backoff, whether it answers and the lab is
  // there, until it does or the lab is gone.
  function probe(el, code, wrapper) {
    if (probing || gone) return;
    probing = true;
    var lab = labOf(el), tries = 0;
    var url = lab ? "/labs/" + encodeURIComponent(lab) + "/state.json" : "/healthz";
    function again() {
      var d = delay(tries++);
      say("lost", "Connection lost — reconnecting… (next try in " + Math.max(1, Math.round(d / 1000)) + " s)");
      setTimeout(once, d);
    }
    function once() {
      if (gone || open || !document.body.contains(el)) { probing = false; return; }
      fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          if (open) { probing = false; return; } // back meanwhile
          if (r.status === 404 && lab) { probing = false; labGone(el); return; }
          if (!r.ok && r.status !== 503) { again(); return; }
          probing = false;
          say("lost", "Connection lost — reconnecting…");
          // rlslab answers: an abnormally closed socket is being tried
          // again by htmx; one the server closed is opened here.
          if (RETRIED.indexOf(code) < 0 && wrapper && wrapper.reconnect) wrapper.reconnect();
        })
        .catch(again);
    }
    once();
  }

  document.addEventListener("htmx:wsClose", function (e) {
    open = false;
    if (unloading || gone) return;
    var el = e.target && e.target.closest ? e.target.closest("[ws-connect]") || e.target : e.target;
    var code = e.detail && e.detail.event ? e.detail.event.code : 0;
    say("lost", "Connection lost — reconnecting…");
    probe(el, code, e.detail && e.detail.socketWrapper);
  });
  document.addEventListener("htmx:wsOpen", function () {
    open = true;
    var b = document.getElementById("conn-status");
    if (!b || b.hidden || gone) return;
    say("ok", "Connected again.");
    hideTimer = setTimeout(function () { b.hidden = true; }, 3000);
  });
  window.addEventListener("offline", function () {
    if (!gone && document.querySelector("[ws-connect]")) say("lost", "Connection lost — reconnecting… (this device is offline)");
  });
})();
