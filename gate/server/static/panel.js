// Small helpers for every panel page: ask before a form or button marked data-confirm is sent.
// The pressed button's own question comes first: a form with an "on" and an "off" button
// must not ask about releasing the door when the guard is ending the release.
"use strict";
document.addEventListener("submit", (event) => {
  const question = event.submitter?.dataset.confirm ?? event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
