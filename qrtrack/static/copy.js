// Copy buttons: <button data-copy-target="element-id"> copies that element's text to the clipboard.
(function () {
  "use strict";

  function selectText(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function flashLabel(button, text) {
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = text;
    window.setTimeout(function () { button.textContent = original; }, 1800);
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy-target]");
    if (!button) {
      return;
    }
    const source = document.getElementById(button.dataset.copyTarget);
    if (!source) {
      return;
    }
    const text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { flashLabel(button, "Copied"); },
        function () { selectText(source); flashLabel(button, "Press Ctrl+C"); }
      );
    } else {
      // Plain-http installs have no clipboard API: select the text so one keystroke copies it.
      selectText(source);
      flashLabel(button, "Press Ctrl+C");
    }
  });
}());
