// Small behaviours htmx does not cover. No inline scripts anywhere: the CSP forbids them.
(function () {
  "use strict";

  // Enter sends, Shift+Enter makes a new line.
  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (input.id !== "composer-input" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (input.value.trim() && !input.disabled) input.form.requestSubmit();
  });

  // An event stream replays from its cursor when htmx re-creates it after an error, and a paused run's
  // stream and the one a decision starts may both deliver the same events, so drop any event this page
  // already applied (per run: event ids count up within a run): no text appears twice.
  var applied = {};
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var id = parseInt(event.detail.lastEventId, 10);
    var stream = event.target.closest("[data-cursor]");
    if (!stream || isNaN(id)) return;
    var run = stream.dataset.run || "";
    if (id <= Math.max(parseInt(stream.dataset.cursor, 10), applied[run] || 0)) { event.preventDefault(); return; }
    stream.dataset.cursor = String(id);
    applied[run] = id;
  });

  // Follow the conversation while the reader is at the bottom; leave them be when they scrolled up.
  var pinned = true;
  function scroller() { return document.getElementById("conversation"); }
  document.addEventListener("scroll", function (event) {
    var box = scroller();
    if (event.target === box) pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }, true);
  function follow() { var box = scroller(); if (box && pinned) box.scrollTop = box.scrollHeight; }
  document.addEventListener("htmx:sseMessage", follow);
  document.addEventListener("htmx:afterSettle", follow);
  document.addEventListener("DOMContentLoaded", function () {
    follow();
    var input = document.getElementById("composer-input");
    if (input && !input.disabled) input.focus();
  });

  // After a message is accepted, clear the box and put the cursor back in it.
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.target.id === "composer" && event.detail.successful) {
      pinned = true;
      var input = document.getElementById("composer-input");
      if (input) input.value = "";
    }
  });

  // A suggestion fills the composer.
  document.addEventListener("click", function (event) {
    var item = event.target.closest(".suggestion");
    var input = document.getElementById("composer-input");
    if (item && input && !input.disabled) { input.value = item.textContent.trim(); input.focus(); }
  });
})();
