// newsmon: "/" focuses the search box; ticking "unmatched items too" reruns the search.
"use strict";
document.addEventListener("keydown", function (event) {
  var box = document.getElementById("q");
  if (event.key === "/" && box && document.activeElement !== box) {
    event.preventDefault();
    box.focus();
  }
});
document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("form.search");
  if (!form) { return; }
  form.querySelectorAll("input[type=checkbox]").forEach(function (field) {
    field.addEventListener("change", function () { form.requestSubmit(); });
  });
});
