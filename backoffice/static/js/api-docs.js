// Starts Swagger UI on the API docs page; the spec URL comes from the page (no inline script).
window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: container.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    // No badge from validator.swagger.io: it would send our spec's URL to a third party, and
    // the page's Content-Security-Policy refuses images from other sites anyway.
    validatorUrl: null
  });
});
