// Code and analytics pages: small conveniences on top of pages that work without JavaScript.
(function () {
  "use strict";

  // Forms marked data-autosubmit apply a changed select or checkbox at once (dates wait for Apply:
  // a period usually needs both ends changed).
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    form.addEventListener("change", function (event) {
      if (event.target.matches("select, input[type=checkbox]")) {
        form.requestSubmit();
      }
    });
  });

  // Country codes become names in the reader's language ("DE" -> "Germany"); the code stays as a tooltip.
  if (window.Intl && Intl.DisplayNames) {
    const names = new Intl.DisplayNames([navigator.language || "en", "en"], { type: "region" });
    document.querySelectorAll("[data-country]").forEach(function (element) {
      if (element.hasAttribute("data-country-short")) {
        return;
      }
      try {
        const name = names.of(element.dataset.country);
        if (name && name !== element.dataset.country) {
          element.title = element.dataset.country;
          element.textContent = name;
        }
      } catch (error) {
        // Not a region code Intl knows: keep the code as it is.
      }
    });
  }

  // A logo larger than the limit is refused here too, before a long upload.
  document.querySelectorAll("input[type=file][data-max-bytes]").forEach(function (input) {
    const message = document.getElementById(input.id + "-error");
    input.addEventListener("change", function () {
      const file = input.files[0];
      const limit = Number(input.dataset.maxBytes);
      const tooBig = file && file.size > limit;
      input.setCustomValidity(tooBig ? "too big" : "");
      input.closest(".field").classList.toggle("has-error", Boolean(tooBig));
      if (message) {
        message.hidden = !tooBig;
        if (tooBig) {
          message.textContent = "That file is " + Math.ceil(file.size / 1000).toLocaleString() +
            " kB; logos can be at most " + Math.floor(limit / 1000).toLocaleString() + " kB.";
        }
      }
    });
    input.form.addEventListener("submit", function (event) {
      if (!input.checkValidity()) {
        event.preventDefault();
        input.focus();
      }
    });
  });

  // The delete button wakes up once the slug is typed; the server checks it again.
  document.querySelectorAll("input[data-confirm-value]").forEach(function (input) {
    const button = input.form.querySelector("[data-confirm-button]");
    function update() {
      button.disabled = input.value.trim() !== input.dataset.confirmValue;
    }
    input.addEventListener("input", update);
    update();
  });
}());
