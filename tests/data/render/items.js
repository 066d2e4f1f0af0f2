// Inserts the news items after fetching them (and, for the safety tests, after trying the
// URLs listed in #news[data-probe]: they must never reach their servers).
(function () {
  "use strict";
  var box = document.getElementById("news");
  var probes = (box.getAttribute("data-probe") || "").split(" ").filter(Boolean);

  function attempt(url) {
    return fetch(url, {mode: "no-cors", cache: "no-store"}).catch(function () { return null; });
  }

  function render(items) {
    items.forEach(function (item) {
      var div = document.createElement("div");
      div.className = "news-item";
      var link = document.createElement("a");
      link.href = item.href;
      link.textContent = item.title;
      var summary = document.createElement("p");
      summary.textContent = item.summary;
      div.appendChild(link);
      div.appendChild(summary);
      box.appendChild(div);
    });
  }

  Promise.all(probes.map(attempt))
    .then(function () { return fetch("items.json"); })
    .then(function (response) { return response.json(); })
    .then(render);
})();
