// Runs before the first paint (not deferred): applies the theme the person picked, if any; otherwise
// the stylesheet follows the system (prefers-color-scheme). The toggle lives in app.js.
(function () {
  "use strict";
  try {
    var theme = localStorage.getItem("theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (e) { /* storage blocked: follow the system */ }
})();
