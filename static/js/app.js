// Small behaviours htmx does not cover. No inline scripts anywhere: the CSP forbids them.
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  function composer() { return $("composer-input"); }
  function busy() { var form = $("composer"); return !!form && form.classList.contains("busy"); }

  // Someone is typing if the focus is in a text field that holds text: a new card must not take it.
  function typing() {
    var el = document.activeElement;
    return !!el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && /^(text|search)$/.test(el.type))) &&
      el.value.trim() !== "";
  }

  function focusComposer() {
    var input = composer();
    if (input) input.focus();
  }

  function firstPendingCard() { return document.querySelector(".call-pending[tabindex]"); }

  // Enter sends, Shift+Enter makes a new line; while the agent works, Enter waits (Esc stops it).
  document.addEventListener("keydown", function (event) {
    var input = event.target;
    if (input.id !== "composer-input" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (!input.value.trim()) return;
    if (!busy()) { input.form.requestSubmit(); return; }
    var hint = $("composer-hint");  // say why nothing was sent
    if (hint) { hint.classList.remove("nudge"); void hint.offsetWidth; hint.classList.add("nudge"); }
  });

  // An event stream replays from its cursor when htmx re-creates it after an error, and a paused run's
  // stream and the one a decision starts may both deliver the same events, so drop any event this page
  // already applied (per run: event ids count up within a run): no text appears twice. Words relayed
  // before they are stored come with an empty id: they are shown unless another stream of the run is
  // ahead of this one (they would put back an older state of the reply).
  var applied = {};
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var id = parseInt(event.detail.lastEventId, 10);
    var stream = event.target.closest("[data-cursor]");
    if (!stream) return;
    var run = stream.dataset.run || "";
    if (isNaN(id)) {
      if ((applied[run] || 0) > parseInt(stream.dataset.cursor, 10)) event.preventDefault();
      return;
    }
    if (id <= Math.max(parseInt(stream.dataset.cursor, 10), applied[run] || 0)) { event.preventDefault(); return; }
    stream.dataset.cursor = String(id);
    applied[run] = id;
  });

  // Words added to a streaming reply's last paragraph (app/web/stream.py) say the paragraph's length
  // before them: they are added only to exactly that, so two streams of a run on the page never add
  // them twice (the reply is sent whole again within the second, and puts back any words skipped).
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var words = event.detail.fragment;
    if (!words || !words.hasAttribute || !words.hasAttribute("data-at")) return;
    if (event.detail.target.textContent.length !== parseInt(words.getAttribute("data-at"), 10)) {
      event.detail.shouldSwap = false;
    }
  });

  // Follow the conversation while the reader is at the bottom; when they scrolled up, leave them be
  // and offer "Jump to latest" as new content arrives.
  var pinned = true, followedTo = null;
  function scroller() { return $("conversation"); }
  function atBottom(box) { return box.scrollHeight - box.scrollTop - box.clientHeight < 80; }
  document.addEventListener("scroll", function (event) {
    var box = scroller();
    if (event.target !== box) return;
    pinned = atBottom(box);
    followedTo = box.scrollTop;
    showJump(!pinned);
  }, true);
  function showJump(show) { var jump = $("jump-latest"); if (jump) jump.hidden = !show; }
  function follow() {
    var box = scroller();
    if (!box) return;
    // A scroll is reported with the next frame; an update may come first: had the view moved up since
    // it last followed, following now would pull the reader back down.
    if (pinned && followedTo !== null && box.scrollTop < followedTo && !atBottom(box)) pinned = false;
    if (pinned) {
      box.scrollTop = box.scrollHeight;
      followedTo = box.scrollTop;
    } else if (!atBottom(box)) showJump(true);
  }
  document.addEventListener("htmx:sseMessage", follow);
  document.addEventListener("htmx:afterSettle", follow);
  document.addEventListener("click", function (event) {
    if (!event.target.closest("#jump-latest")) return;
    pinned = true;
    showJump(false);
    follow();
  });

  // Times are stored in UTC; show them in the reader's time zone.
  function localTimes(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      if (el.classList.contains("js-local-time")) {
        el.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      }
      el.title = when.toLocaleString([], { dateStyle: "full", timeStyle: "short" });
    });
  }

  // Each code block gets a copy button (added here: model text is hx-disable'd and never carries controls).
  function copyButtons(root) {
    (root.querySelectorAll ? root : document).querySelectorAll(".markdown pre").forEach(function (pre) {
      if (pre.parentElement.classList.contains("code-block")) return;
      var wrap = document.createElement("div");
      wrap.className = "code-block";
      pre.parentNode.insertBefore(wrap, pre);
      wrap.appendChild(pre);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy-button btn btn-small btn-ghost";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      wrap.appendChild(button);
    });
  }

  function copied(button, text) {
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.classList.add("is-copied");
      setTimeout(function () { button.textContent = label; button.classList.remove("is-copied"); }, 1500);
    };
    if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, function () {});
  }

  document.addEventListener("click", function (event) {
    var code = event.target.closest(".copy-button");
    if (code) { copied(code, code.parentElement.querySelector("pre").innerText); return; }
    var reply = event.target.closest("[data-copy]");
    if (reply) {
      var source = $(reply.getAttribute("data-copy"));
      if (source) copied(reply, source.dataset.markdown !== undefined ? source.dataset.markdown : source.innerText);
    }
  });

  // A new card arriving takes the focus, unless the person is typing (screen readers announce it
  // through the conversation's live region either way).
  function takeFocusForCard(card) {
    if (typing()) return;
    var open = document.querySelector("dialog[open]");
    if (open) return;
    card.focus({ preventScroll: true });
    follow();
  }

  function enhance(root) {
    localTimes(root);
    copyButtons(root);
  }

  document.addEventListener("htmx:load", function (event) {
    var el = event.detail.elt;
    if (!el || !el.querySelectorAll) return;
    enhance(el);
    if (!document.body.dataset.ready) return;  // the page's own content: handled at load
    // Once per card: htmx runs a swap's load events when it settles (20 ms on), so the load of the
    // message a card arrived in can come after the card's own, and must not take the focus back from
    // someone already tabbing through the card.
    var card = el.matches(".call-pending[tabindex]") ? el : el.querySelector(".call-pending[tabindex]");
    if (!card || card.dataset.offered || el.closest("[data-deciding]")) return;
    card.dataset.offered = "1";
    takeFocusForCard(card);
  });

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    follow();
    var card = firstPendingCard();
    if (card && !composer().value) card.focus({ preventScroll: true });
    else if (composer()) focusComposer();
    setTimeout(function () { document.body.dataset.ready = "1"; }, 0);
    themeToggle();
  });

  // Each update of a streaming reply also sends the status line ("Writing…"): swapping in the same line
  // again would restart its animation many times a second (the dots would never move), so an unchanged
  // status line stays as it is. Only what it shows is compared: for a moment after a swap htmx marks the
  // line itself (htmx-added), and a busy browser handles several updates within that moment.
  function shownStatus(line) {
    var shown = line.firstElementChild;
    return shown ? shown.outerHTML : "";
  }
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target, fragment = event.detail.fragment;
    if (!target || target.id !== "run-status" || !fragment || !fragment.firstElementChild) return;
    if (shownStatus(target) === shownStatus(fragment.firstElementChild)) event.detail.shouldSwap = false;
  });

  // The composer's message box is preserved across swaps (hx-preserve); keep its focus too.
  var composerHadFocus = false;
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "composer") composerHadFocus = document.activeElement === composer();
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    if (composerHadFocus && event.detail.target && event.detail.target.id === "composer" && document.activeElement !== composer()) focusComposer();
    composerHadFocus = false;
  });

  // After a message is accepted, clear the box (the same element: it is preserved across swaps) and
  // keep the cursor in it; after a decision, go to the next card waiting for one, else back to the box.
  // The form that asked is often replaced before its answer arrives, by that answer or by the page's
  // stream (a paused run's stream shows the message or the decision first); htmx then reports the
  // request on the detached form only, so the answer is awaited on the request itself.
  function whenAccepted(xhr, then) {
    xhr.addEventListener("loadend", function () { if (xhr.status >= 200 && xhr.status < 300) then(); });
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt, xhr = event.detail.xhr;
    if (!elt || !xhr) return;
    if (elt.id === "composer") {
      whenAccepted(xhr, function () {
        pinned = true;
        var input = composer();
        if (input) input.value = "";
        focusComposer();
      });
    } else if (elt.hasAttribute("data-decision")) {
      whenAccepted(xhr, function () {
        if (typing()) return;
        var next = firstPendingCard();
        if (next) next.focus();
        else focusComposer();
      });
    }
  });

  // A command's answer (a message, a decision, Stop) shows the run as the command left it, and a stream
  // that follows it from there. If the page's own stream has already shown what came after (the answer
  // was slow), swapping it in would take the page back: a card approved again, "Stop" for a run that
  // has finished, for good, since the new stream replays only events the page has. Such an answer is
  // dropped, all but the count of approvals waiting (the stream does not show that). htmx reports it on
  // the element it targeted, which the stream may have replaced by then (the card, the composer): so the
  // check listens on that element (adding the same listener again is a no-op).
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.target) event.detail.target.addEventListener("htmx:beforeSwap", dropIfBehind);
  });
  function dropIfBehind(event) {
    var html = event.detail.serverResponse;
    if (typeof html !== "string" || html.indexOf('id="run-stream"') < 0) return;
    var answer = new DOMParser().parseFromString(html, "text/html");
    var stream = answer.getElementById("run-stream");
    if (!stream || !stream.dataset.cursor) return;
    if ((applied[stream.dataset.run] || 0) <= parseInt(stream.dataset.cursor, 10)) return;
    event.detail.shouldSwap = false;
    var count = answer.getElementById("approvals-link"), shown = $("approvals-link");
    if (count && shown) shown.textContent = count.textContent;
  }

  // The reason box opens in view, with the cursor in it.
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!details.matches || !details.matches("details.reject") || !details.open) return;
    var reason = details.querySelector("textarea");
    if (reason) reason.focus({ preventScroll: true });
    // The details lays out through display: contents (no box of its own): scroll its form into view.
    (details.querySelector("form") || details).scrollIntoView({ block: "nearest" });
  }, true);

  // A suggestion fills the composer.
  document.addEventListener("click", function (event) {
    var item = event.target.closest(".suggestion");
    var input = composer();
    if (item && input) { input.value = item.textContent.trim(); input.focus(); }
  });

  // Keyboard shortcuts (the "?" panel lists them). Letters act only outside text fields.
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || event.defaultPrevented) return;
    var el = document.activeElement;
    var inField = el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT" || el.isContentEditable);
    if (event.key === "Escape") {
      var stop = document.querySelector(".btn-stop");
      if (stop && !document.querySelector("dialog[open]") && !(el && el.closest("details.reject"))) { event.preventDefault(); stop.click(); }
      return;
    }
    if (inField) return;
    var card = el && el.closest ? el.closest(".call-pending") : null;
    switch (event.key) {
      case "?":
        var panel = $("shortcuts");
        if (panel && !panel.open) { event.preventDefault(); panel.showModal(); }
        break;
      case "/":
        event.preventDefault();
        focusComposer();
        break;
      case "a":
        if (card) { event.preventDefault(); card.querySelector(".approve-form button").click(); }
        break;
      case "r":
        if (card) {
          event.preventDefault();
          var reject = card.querySelector("details.reject");
          reject.open = true;
        }
        break;
      case "c":
        var link = document.querySelector("[data-shortcut='c']");
        if (link) { event.preventDefault(); link.click(); }
        break;
    }
  });

  // Theme: follow the system ("auto"), or the person's choice, remembered in this browser.
  var THEMES = ["auto", "light", "dark"];
  var NAMES = { auto: "Auto", light: "Light", dark: "Dark" };
  function currentTheme() { return document.documentElement.dataset.theme || "auto"; }
  function showTheme(button) {
    var theme = currentTheme();
    button.querySelector(".theme-name").textContent = NAMES[theme];
    button.dataset.theme = theme;
    button.setAttribute("aria-label", "Theme: " + NAMES[theme]);
    button.title = theme === "auto" ? "Theme: follows the system (click to change)" : "Theme: " + NAMES[theme] + " (click to change)";
  }
  function themeToggle() {
    var button = $("theme-toggle");
    if (!button) return;
    button.hidden = false;
    showTheme(button);
    button.addEventListener("click", function () {
      var next = THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length];
      if (next === "auto") delete document.documentElement.dataset.theme;
      else document.documentElement.dataset.theme = next;
      try {
        if (next === "auto") localStorage.removeItem("theme"); else localStorage.setItem("theme", next);
      } catch (e) { /* storage blocked: the choice lasts for this page */ }
      showTheme(button);
    });
  }
})();
