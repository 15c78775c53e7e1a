// The interactive API page over this server's OpenAPI document. validatorUrl null: Swagger UI would otherwise
// send the document to an outside validator, and this page talks to its own server only.
window.ui = SwaggerUIBundle({
  url: "/v1/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
});
