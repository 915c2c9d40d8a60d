// What Flask-Admin's templates did with inline handlers, which the Content-Security-Policy
// refuses. Its placeholder links (href="javascript:void(0)": tabs, dropdown entries, the current
// page) do nothing when clicked, instead of asking the browser to run a javascript: URL; and an
// entry of the "With selected" menu runs its action (modelActions comes from Flask-Admin's
// actions.js, which asks for a selection and any confirmation first). It listens while the click
// travels down, because Flask-Admin's dropdown script stops it on the way back up.
document.addEventListener("click", function (event) {
  var link = event.target.closest ? event.target.closest("a") : null;
  if (!link) {
    return;
  }
  var action = link.getAttribute("data-model-action");
  if (action && window.modelActions) {
    event.preventDefault();
    window.modelActions.execute(action);
    return;
  }
  if ((link.getAttribute("href") || "").trim().toLowerCase().indexOf("javascript:") === 0) {
    event.preventDefault();
  }
}, true);
