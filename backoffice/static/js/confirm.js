// Asks before any form marked data-confirm is submitted (no inline handlers: CSP-friendly).
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
}, true);
