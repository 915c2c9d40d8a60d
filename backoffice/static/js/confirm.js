// Asks before an irreversible action (no inline handlers: CSP-friendly). The question comes from
// data-confirm on the form, on the button that submits it, or on a chosen option inside it (a
// checked radio: only some outcomes need asking). Once the user agrees, the form carries
// confirmed=1, which the server requires for those actions; without it the server shows its
// own confirmation page instead of acting.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var sources = [form, event.submitter].concat(
    Array.prototype.slice.call(form.querySelectorAll("input:checked[data-confirm], option:checked[data-confirm]"))
  );
  var questions = sources
    .map(function (source) { return source ? source.getAttribute("data-confirm") : null; })
    .filter(function (question) { return question; });
  if (questions.length === 0) {
    return;
  }
  if (!window.confirm(questions.join("\n\n"))) {
    event.preventDefault();
    return;
  }
  var flag = form.querySelector('input[name="confirmed"]');
  if (!flag) {
    flag = document.createElement("input");
    flag.type = "hidden";
    flag.name = "confirmed";
    form.appendChild(flag);
  }
  flag.value = "1";
}, true);
