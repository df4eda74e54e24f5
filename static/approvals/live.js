// Live approvals for reviewers, on every page: the count badge in the navigation, and on
// the inbox page the cards themselves. One websocket per page (/ws/approvals/); the server
// sends only what this person may decide. Decisions go through the JSON API with the CSRF
// token of the page.
//
// An inbox stays open for hours: when the socket drops (the console restarts, daphne's
// websocket timeout, a proxy, a laptop waking up) it reconnects with a growing delay, and
// after a reconnection reloads the inbox's lists (or the request's card) from the page, so
// that what changed while it was away is shown; the count comes with the new socket.
(function () {
  "use strict";

  var inbox = document.getElementById("approvals-inbox");
  var detail = document.getElementById("approval-detail");
  var statusBadge = document.getElementById("live-status");
  var notifyButton = document.getElementById("enable-notifications");
  var retry = 500;
  var socket = null;
  var connectedBefore = false;

  function setState(state, text) {
    if (!statusBadge) return;
    statusBadge.dataset.state = state;
    statusBadge.textContent = text;
  }

  function setCount(n) {
    document.querySelectorAll("[data-approvals-count]").forEach(function (el) {
      el.textContent = String(n);
    });
  }

  function fragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function updateEmptyNote() {
    var empty = document.getElementById("approvals-pending-empty");
    var pending = document.getElementById("approvals-pending");
    if (empty && pending) empty.hidden = pending.children.length > 0;
  }

  // A card replaced while its reviewer types in it (the rows estimate arriving, another
  // reviewer's approval) keeps what was typed, and the cursor where it was.
  function carryOver(old, card) {
    var focused = null;
    old.querySelectorAll("form[data-verb] input[name], form[data-verb] textarea[name], form[data-verb] select[name]")
      .forEach(function (field) {
        if (field.type === "hidden" || field.type === "submit") return;
        var twin = card.querySelector(
          "form[data-verb='" + field.form.dataset.verb + "'] [name='" + field.name + "']"
        );
        if (!twin) return;
        if (field.type === "checkbox" || field.type === "radio") twin.checked = field.checked;
        else twin.value = field.value;
        if (field === document.activeElement) focused = { twin: twin, start: field.selectionStart, end: field.selectionEnd };
      });
    return focused;
  }

  function swap(old, card) {
    var focused = carryOver(old, card);
    old.replaceWith(card);
    if (focused) {
      focused.twin.focus();
      try { focused.twin.setSelectionRange(focused.start, focused.end); } catch (e) { /* not a text field */ }
    }
  }

  function placeCard(msg) {
    var card = fragment(msg.html);
    if (!card) return;
    var old = document.getElementById("approval-" + msg.id);
    if (detail && String(msg.id) === detail.dataset.id && old) {
      swap(old, card);
      return;
    }
    if (!inbox) return;
    var target = document.getElementById(msg.section === "pending" ? "approvals-pending" : "approvals-history");
    if (old && old.parentElement === target) {
      swap(old, card);
    } else {
      if (old) old.remove();
      if (msg.section === "pending") target.appendChild(card);
      else target.insertBefore(card, target.firstChild);
    }
    updateEmptyNote();
    tick();
  }

  function notify(info) {
    if (!info || !("Notification" in window) || Notification.permission !== "granted") return;
    try {
      var n = new Notification(info.title, { body: info.body, tag: "airlock-approval-" + info.url });
      n.onclick = function () { window.focus(); window.location.href = info.url; };
    } catch (e) { /* some browsers only notify from a service worker */ }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/approvals/");
    socket.onopen = function () {
      retry = 500;
      setState("live", "live");
      if (connectedBefore) resync();
      connectedBefore = true;
    };
    socket.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.type === "count") setCount(msg.pending);
      else if (msg.type === "request") { placeCard(msg); notify(msg.notify); }
    };
    socket.onclose = function (event) {
      if (event.code === 4401 || event.code === 4403) { setState("offline", "not allowed"); return; }
      setState("offline", "reconnecting…");
      window.setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  // After a reconnection: the lists (or the card) as the page now shows them.
  function resync() {
    if (!inbox && !detail) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var page = new DOMParser().parseFromString(html, "text/html");
        var ids = inbox ? ["approvals-pending", "approvals-history"] : ["approval-detail"];
        ids.forEach(function (id) {
          var now = page.getElementById(id);
          var here = document.getElementById(id);
          if (now && here) here.innerHTML = now.innerHTML;
        });
        updateEmptyNote();
        tick();
      })
      .catch(function () { /* the next reconnection tries again */ });
  }

  // Time left on pending cards.
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".time-left[data-expires]").forEach(function (el) {
      var left = Math.max(0, Math.round((Date.parse(el.dataset.expires) - now) / 1000));
      var m = Math.floor(left / 60), s = left % 60;
      el.textContent = left > 0 ? (m ? m + " min " : "") + s + " s left" : "expiring";
    });
  }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // Approve / reject through the API; the websocket then moves the card in every browser.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("approval-form")) return;
    event.preventDefault();
    var data = {};
    new FormData(form).forEach(function (value, key) { if (key !== "csrfmiddlewaretoken") data[key] = value; });
    var errorBox = form.parentElement.querySelector(".form-error");
    var buttons = form.parentElement.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch("/api/approvals/" + form.dataset.id + "/" + form.dataset.verb + "/", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(data)
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      if (!result.ok) {
        if (errorBox) { errorBox.textContent = result.body.error || "refused"; errorBox.hidden = false; }
        buttons.forEach(function (b) { b.disabled = false; });
      }
    }).catch(function () {
      if (errorBox) { errorBox.textContent = "the console could not be reached"; errorBox.hidden = false; }
      buttons.forEach(function (b) { b.disabled = false; });
    });
  });

  if (notifyButton && "Notification" in window && Notification.permission === "default") {
    notifyButton.hidden = false;
    notifyButton.addEventListener("click", function () {
      Notification.requestPermission().then(function () { notifyButton.hidden = true; });
    });
  }

  tick();
  window.setInterval(tick, 1000);
  connect();
})();
