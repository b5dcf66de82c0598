/* aggregator: small progressive enhancement; every page works without it.
 *  - <time datetime> text is rewritten to the reader's time zone (the server
 *    writes UTC); relative times ("3 h ago") keep their text and get the local
 *    time as a tooltip;
 *  - "Copy" buttons next to feed addresses;
 *  - a link to an article folded inside <details> opens it.
 * Loaded as an external file: the Content-Security-Policy forbids inline script. */
(function () {
  "use strict";

  var format;
  try {
    format = new Intl.DateTimeFormat(undefined, {
      day: "numeric", month: "short", year: "numeric",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short"
    });
  } catch (e) {
    return;
  }

  function localiseTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      if (el.hasAttribute("data-local")) continue;
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) continue;
      var local = format.format(when);
      var wrapper = el.parentElement;
      if (wrapper && wrapper.classList.contains("when")) {
        wrapper.title = local;            // relative text stays, local time on hover
      } else {
        el.title = el.textContent;        // the UTC original on hover
        el.textContent = local;
      }
      el.setAttribute("data-local", "1");
    }
    try {
      document.documentElement.setAttribute("data-time-zone", Intl.DateTimeFormat().resolvedOptions().timeZone || "");
    } catch (e) { /* old browsers: nothing to say */ }
  }

  function enableCopyButtons() {
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      var button = buttons[i];
      var input = document.getElementById(button.getAttribute("data-copy"));
      if (!input) continue;
      button.hidden = false;
      button.addEventListener("click", (function (b, field) {
        return function () {
          field.select();
          var done = function () { b.textContent = "Copied"; };
          if (navigator.clipboard && navigator.clipboard.writeText) {
            navigator.clipboard.writeText(field.value).then(done, function () {
              try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
            });
          } else {
            try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
          }
        };
      })(button, input));
    }
  }

  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id && document.getElementById(id);
    while (el) {
      if (el.tagName === "DETAILS") el.open = true;
      el = el.parentElement;
    }
  }

  function start() {
    localiseTimes(document);
    enableCopyButtons();
    openTarget();
    window.addEventListener("hashchange", openTarget);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
