// svcbridge console: live refresh of the overview and SLA countdowns. Plain JS, served by the daemon;
// the CSP allows no inline script, and nothing here evaluates text from the server as code.
"use strict";
(function () {
  var period = (parseFloat(document.body.dataset.refresh) || 3) * 1000;

  // The overview's facts come back as a server-rendered, autoescaped fragment; the ETag makes an
  // unchanged answer a 304 with no body, so an open tab costs a few grouped counts every few seconds.
  var live = document.getElementById("live");
  if (live) {
    var etag = null;
    var tick = function () {
      if (document.hidden) return;
      var headers = etag ? { "If-None-Match": etag } : {};
      fetch(live.dataset.src, { headers: headers, credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 200) {
            etag = r.headers.get("ETag");
            return r.text().then(function (html) { live.innerHTML = html; live.dataset.updated = Date.now(); });
          }
          if (r.status === 401) window.location.reload();
        })
        .catch(function () { /* the daemon restarting: try again next tick */ });
    };
    setInterval(tick, period);
  }

  // Deadlines: amber when less than a quarter of the time from creation is left, red when overdue.
  function fmt(ms) {
    var s = Math.floor(Math.abs(ms) / 1000), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60);
    return (ms < 0 ? "-" : "") + (d ? d + "d " : "") + h + "h " + m + "m " + (s % 60) + "s";
  }
  function countdowns() {
    var now = Date.now();
    document.querySelectorAll(".countdown").forEach(function (el) {
      var due = Date.parse(el.dataset.due), start = Date.parse(el.dataset.start || "");
      if (isNaN(due)) return;
      var left = due - now, total = isNaN(start) ? 0 : due - start;
      el.textContent = left < 0 ? (el.dataset.overdue || "overdue") + " " + fmt(-left) : fmt(left);
      el.classList.toggle("red", left < 0);
      el.classList.toggle("amber", left >= 0 && total > 0 && left < total / 4);
    });
  }
  countdowns();
  setInterval(countdowns, 1000);
})();
