// Live updates for the console. Every element with an id and data-live="URL" is refreshed
// from that URL's page every 15 seconds while the page is shown: the page is fetched again with
// the same session, and the element takes the content of the element with the same id there.
// Nothing else changes. Without JavaScript every page is complete as served; this only saves
// pressing reload. A fetch that fails or lands on the login page (the session ended) changes
// nothing. window.txmailLive() refreshes at once (the browser tests call it).
(function () {
  "use strict";
  var PERIOD_MS = 15000;

  function refresh() {
    var byUrl = {};
    document.querySelectorAll("[data-live][id]").forEach(function (el) {
      var url = el.getAttribute("data-live");
      (byUrl[url] = byUrl[url] || []).push(el);
    });
    return Promise.all(Object.keys(byUrl).map(function (url) {
      return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (answer) {
          if (!answer.ok || answer.redirected) { throw new Error("not refreshed"); }
          return answer.text();
        })
        .then(function (text) {
          var fresh = new DOMParser().parseFromString(text, "text/html");
          byUrl[url].forEach(function (el) {
            var next = fresh.getElementById(el.id);
            if (next && next.innerHTML !== el.innerHTML) { el.innerHTML = next.innerHTML; }
          });
        })
        .catch(function () { /* the page as it is stays */ });
    }));
  }

  window.txmailLive = refresh;
  setInterval(function () { if (!document.hidden) { refresh(); } }, PERIOD_MS);
})();
