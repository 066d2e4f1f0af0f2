// newsmon: /docs renders /openapi.json with Swagger UI (its files are served by this server).
"use strict";
window.addEventListener("load", function () {
  window.SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
});
