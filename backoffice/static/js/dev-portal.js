// Development portal: sends the page's form to the public API and shows the answer as JSON.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.hasAttribute("data-api")) { return; }
  event.preventDefault();
  var body = { token: form.getAttribute("data-token") };
  var password = form.querySelector("input[name=password]");
  if (password) { body.password = password.value; }
  fetch(form.getAttribute("data-api"), {
    method: "POST",
    headers: { "Content-Type": "application/json", "Accept-Language": document.documentElement.lang },
    body: JSON.stringify(body)
  }).then(function (response) {
    return response.text().then(function (text) {
      var result = document.getElementById("result");
      result.textContent = response.status + "\n" + text;
      result.classList.remove("d-none");
    });
  });
});
