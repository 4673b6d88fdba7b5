// Warden dashboard: small conveniences only; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Ask before changes that are hard to undo (activate, roll back, revoke).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }

  // A secret shown once: select it on focus and offer a copy button.
  for (const input of document.querySelectorAll("[data-select-on-focus]")) {
    input.addEventListener("focus", () => input.select());
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const target = document.getElementById(button.dataset.copy);
    if (!target || !navigator.clipboard) {
      continue;
    }
    button.hidden = false;
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(target.value);
      button.textContent = "Copied";
    });
  }
});
