// "Try it" on a policy page: ask the console for the decision while the admin types.
// The answer's HTML is rendered (and escaped) by the server's template, so the page shows
// the same thing with or without JavaScript.
(function () {
  "use strict";
  var form = document.getElementById("try-form");
  if (!form) return;
  var out = document.getElementById("try-result");
  var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var timer = null;
  var latest = 0;

  function show(seq, html) {
    // Only the answer to the latest question is shown: an earlier one may arrive late.
    if (seq !== latest) return;
    out.innerHTML = html;
    out.dataset.answered = String(seq);
  }

  function ask() {
    var seq = ++latest;
    form.dataset.asked = String(seq);
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": token },
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (type.indexOf("application/json") === -1) {
        throw new Error("the console answered " + response.status + " (is your session still open? reload the page)");
      }
      return response.json();
    }).then(function (data) {
      show(seq, data.html);
    }).catch(function (error) {
      var p = document.createElement("p");
      p.className = "errorlist";
      p.setAttribute("role", "alert");
      p.textContent = "Could not get the decision: " + error.message;
      if (seq === latest) { out.replaceChildren(p); }
    });
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(ask, 200);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(timer);
    ask();
  });
})();
