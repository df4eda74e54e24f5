// Live approvals for reviewers, on every page: the count badge in the navigation, and on
// the inbox page the cards themselves. One websocket per page (/ws/approvals/); the server
// sends only what this person may decide. Decisions go through the JSON API with the CSRF
// token of the page.
//
// An inbox stays open for hours: when the socket drops (the console restarts, daphne's
// websocket timeout, a proxy, a laptop waking up) it reconnects with a growing delay, and
// after a reconnection reloads the inbox's lists (or the request's card) from the page, so
// that what changed while it was away is shown; the count comes with the new socket.
//
// The page says how changes reach it (data-updates on the inbox or the request's card):
// "push", a channel layer shared by every process (Redis), sends them all to the socket;
// "poll", the in-memory layer of the embedded default, reaches only the console's own
// process (a decision made in a browser), not what the gateway or the worker publish (a
// statement held, a request expired). There the lists are reloaded from the page every
// POLL_MS while the tab is visible, one request at a time.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var inbox = document.getElementById("approvals-inbox");
  var detail = document.getElementById("approval-detail");
  var lists = inbox || detail;
  var polling = !!lists && lists.dataset.updates === "poll";
  var statusBadge = document.getElementById("live-status");
  var notifyButton = document.getElementById("enable-notifications");
  var retry = 500;
  var socket = null;
  var connectedBefore = false;
  var syncing = false;
  var syncAgain = false;
  var pollTimer = null;
  // While a reload of the lists is on its way: what the socket sent meanwhile (newer than
  // the page being fetched, which must not undo it). Request ids, and "count".
  var pushedSince = null;

  function setState(state, text) {
    if (!statusBadge) return;
    statusBadge.dataset.state = state;
    statusBadge.textContent = text;
  }

  function setCount(n) {
    if (pushedSince) pushedSince.count = true;
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

  // A card as the server rendered it, less what changes on every rendering (the seconds
  // left, the CSRF token): taken before the page touches it, so that what a reviewer does
  // with the card (typing, a refusal shown) does not count as a change.
  function signature(card) {
    if (card.airlockSignature === undefined) {
      var copy = card.cloneNode(true);
      copy.querySelectorAll(".time-left").forEach(function (el) { el.textContent = ""; });
      copy.querySelectorAll("input[name=csrfmiddlewaretoken]").forEach(function (el) { el.remove(); });
      card.airlockSignature = copy.outerHTML;
    }
    return card.airlockSignature;
  }

  function placeCard(msg) {
    var card = fragment(msg.html);
    if (!card) return;
    signature(card);
    if (pushedSince) pushedSince[String(msg.id)] = true;
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

  // Brings a list (or the request's card) here to what the page now shows, card by card: a
  // card the server renders as before is left alone, a changed one is swapped (keeping what
  // was typed in it), new ones are put in their place and gone ones removed. Cards the
  // socket sent while the page was on its way are newer: they stay as they are.
  function merge(here, now) {
    var fresh = function (el) { return !!(pushedSince && el.dataset && pushedSince[el.dataset.id]); };
    var want = [];
    Array.prototype.slice.call(now.children).forEach(function (card) {
      if (fresh(card)) return;
      var old = card.id ? document.getElementById(card.id) : null;
      if (old && signature(old) === signature(card)) {
        want.push(old);
        return;
      }
      if (old && old.parentElement === here) swap(old, card);
      else if (old) old.remove();
      want.push(card);
    });
    Array.prototype.slice.call(here.children).forEach(function (el) {
      if (want.indexOf(el) < 0 && !fresh(el)) el.remove();
    });
    var cursor = here.firstElementChild;
    want.forEach(function (card) {
      while (cursor && cursor !== card && fresh(cursor)) cursor = cursor.nextElementSibling;
      if (cursor === card) cursor = cursor.nextElementSibling;
      else here.insertBefore(card, cursor);
    });
  }

  // The lists (or the card) as the page now shows them: after a reconnection, and every
  // POLL_MS where the socket does not hear of every change. Never two at a time.
  function resync() {
    if (!lists) return;
    window.clearTimeout(pollTimer);
    pollTimer = null;
    if (syncing) { syncAgain = true; return; }
    syncing = true;
    syncAgain = false;
    pushedSince = {};
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok && !response.redirected ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var page = new DOMParser().parseFromString(html, "text/html");
        var active = document.activeElement;
        var selection = null;
        try { selection = [active.selectionStart, active.selectionEnd]; } catch (e) { /* not a text field */ }
        var ids = inbox ? ["approvals-pending", "approvals-history"] : ["approval-detail"];
        ids.forEach(function (id) {
          var now = page.getElementById(id);
          var here = document.getElementById(id);
          if (now && here) merge(here, now);
        });
        // A card moved in the list loses the focus: give it back.
        if (active && active !== document.activeElement && document.contains(active)) {
          active.focus();
          try { if (selection) active.setSelectionRange(selection[0], selection[1]); } catch (e) { /* not a text field */ }
        }
        var count = page.getElementById("approvals-count");
        if (count && !pushedSince.count) setCount(count.textContent.trim());
        updateEmptyNote();
        tick();
      })
      .catch(function () { /* the next reconnection, or the next poll, tries again */ })
      .then(function () {
        syncing = false;
        pushedSince = null;
        if (syncAgain) resync();
        else schedulePoll();
      });
  }

  function schedulePoll() {
    if (!polling || pollTimer !== null) return;
    pollTimer = window.setTimeout(function () {
      pollTimer = null;
      // A hidden tab asks nothing: it catches up when it is shown again.
      if (document.visibilityState === "visible") resync();
    }, POLL_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (polling && document.visibilityState === "visible") resync();
  });

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

  document.querySelectorAll(".card.approval").forEach(signature);
  tick();
  window.setInterval(tick, 1000);
  connect();
  schedulePoll();
})();
