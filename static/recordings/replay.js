// The session replay: fetches a session's events in pages, renders them as they arrive,
// plays them back (play, pause, 1x-16x, seek, skip idle gaps), follows a live session over
// its websocket, and shows the integrity check. No framework: the page must stay fast on
// sessions of 100,000 events.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("player-config").textContent);
  var player = document.getElementById("player");
  var timeline = document.getElementById("timeline");
  var playButton = document.getElementById("play");
  var speedSelect = document.getElementById("speed");
  var skipIdle = document.getElementById("skip-idle");
  var clock = document.getElementById("clock");
  var progress = document.getElementById("progress");
  var scrubber = document.getElementById("scrubber");
  var loading = document.getElementById("loading");
  var FIRST_PAGE = 200; // small, so the first screen comes quickly
  var IDLE_MS = 1500; // a gap longer than this (recorded time) is skipped when asked
  var TICK_MS = 40;

  var entries = []; // {seq, offset, el} in recording order
  var shown = 0; // entries[0..shown) are visible
  var position = 0; // playhead, ms since the session started
  var playing = false;
  var allLoaded = false;
  var lastSeq = 0;
  var lastTick = 0;
  var following = true; // before any play or seek the page shows everything it has

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmtTime(ms) {
    var s = Math.max(0, ms) / 1000;
    var m = Math.floor(s / 60);
    var rest = (s - m * 60).toFixed(1);
    return m + ":" + (rest < 10 ? "0" : "") + rest;
  }

  function duration() {
    return entries.length ? entries[entries.length - 1].offset : 0;
  }

  function resultTable(payload) {
    var wrap = el("div", "result");
    var columns = Array.isArray(payload.columns) ? payload.columns : [];
    var rows = Array.isArray(payload.first_rows) ? payload.first_rows : [];
    if (columns.length) {
      var table = el("table", "rows");
      var head = el("tr");
      columns.forEach(function (c) { head.appendChild(el("th", null, c)); });
      var thead = el("thead");
      thead.appendChild(head);
      table.appendChild(thead);
      var body = el("tbody");
      rows.forEach(function (row) {
        var tr = el("tr");
        (Array.isArray(row) ? row : [row]).forEach(function (v) {
          tr.appendChild(el("td", v === null ? "null" : null, v === null ? "NULL" : v));
        });
        body.appendChild(tr);
      });
      table.appendChild(body);
      wrap.appendChild(table);
    }
    var facts = [];
    if (payload.command_tag) facts.push(payload.command_tag);
    if (payload.rows !== undefined) facts.push(payload.rows + " rows");
    if (rows.length && payload.rows > rows.length) facts.push("first " + rows.length + " recorded");
    if (payload.masked) facts.push(payload.masked + " values masked");
    if (payload.duration_ms !== undefined) facts.push(payload.duration_ms + " ms");
    wrap.appendChild(el("div", "muted", facts.join(" · ")));
    return wrap;
  }

  function render(event) {
    var p = event.payload || {};
    var li = el("li", "ev ev-" + event.kind);
    li.dataset.seq = event.seq;
    li.dataset.kind = event.kind;
    var time = el("span", "t", fmtTime(event.offset_ms));
    time.title = event.at;
    li.appendChild(time);
    switch (event.kind) {
      case "statement":
        li.appendChild(el("code", "sql", p.text));
        if (Array.isArray(p.params) && p.params.length) {
          li.appendChild(el("span", "params", "params: " + JSON.stringify(p.params)));
        }
        break;
      case "decision":
        var chip = el("span", "badge decision " + (p.action || ""), p.action);
        li.appendChild(chip);
        li.appendChild(el("span", "rule", (p.rule ? "rule " + p.rule : "no rule") +
          (p.policy ? " · policy " + p.policy + (p.policy_version ? " v" + p.policy_version : "") : "") +
          (p.cached ? " · cached" : "") + (p.message ? " · " + p.message : "")));
        break;
      case "result":
        li.appendChild(resultTable(p));
        break;
      case "error":
        li.appendChild(el("span", "badge terminated", "error " + (p.code || "")));
        li.appendChild(el("span", "message", p.message));
        break;
      case "notice":
        li.appendChild(el("span", "message muted", (p.severity || "NOTICE") + ": " + (p.message || "")));
        break;
      case "approval":
        li.appendChild(el("span", "badge role", "approval " + (p.state || "")));
        li.appendChild(el("span", "message", (p.by ? "by " + p.by : "") + (p.reason ? ": " + p.reason : "") +
          (p.request_id ? " (request " + p.request_id + ")" : "")));
        break;
      case "output":
      case "input":
        li.appendChild(el("pre", "tty " + event.kind, p.data));
        break;
      case "dropped":
        li.appendChild(el("span", "badge terminated", p.count + " events not recorded"));
        li.appendChild(el("span", "message", p.reason));
        break;
      case "session_start":
        li.appendChild(el("span", "message muted", "session started by " + (p.agent || "?") +
          (p.on_behalf_of ? " for " + p.on_behalf_of : "") + (p.client_address ? " from " + p.client_address : "")));
        break;
      case "session_end":
        li.appendChild(el("span", "message muted", "session " + (p.status || "ended") + ": " + (p.reason || "")));
        break;
      default:
        li.appendChild(el("code", null, JSON.stringify(p)));
    }
    return li;
  }

  function add(events) {
    var fragment = document.createDocumentFragment();
    events.forEach(function (event) {
      if (event.seq <= lastSeq) return;
      lastSeq = event.seq;
      var li = render(event);
      var entry = { seq: event.seq, offset: event.offset_ms, el: li };
      if (!following && event.offset_ms > position) li.hidden = true;
      else shown = entries.length + 1;
      entries.push(entry);
      fragment.appendChild(li);
    });
    timeline.appendChild(fragment);
    if (following) {
      position = duration();
      if (config.live) timeline.scrollTop = timeline.scrollHeight;
    }
    paint();
  }

  function reveal() {
    // Entries up to the playhead are visible, the rest hidden; only what changed is touched.
    while (shown < entries.length && entries[shown].offset <= position) {
      entries[shown].el.hidden = false;
      shown++;
    }
    while (shown > 0 && entries[shown - 1].offset > position) {
      shown--;
      entries[shown].el.hidden = true;
    }
  }

  function paint() {
    var total = duration();
    clock.textContent = fmtTime(position) + " / " + fmtTime(total);
    progress.style.width = (total ? Math.min(100, (position / total) * 100) : 100) + "%";
  }

  function setState(state) {
    player.dataset.state = state;
    playButton.textContent = state === "playing" ? "Pause" : "Play";
  }

  function tick() {
    if (!playing) return;
    var now = performance.now();
    var next = position + (now - lastTick) * Number(speedSelect.value);
    lastTick = now;
    var upcoming = entries[shown];
    if (skipIdle.checked && upcoming && upcoming.offset - position > IDLE_MS) {
      next = Math.max(next, upcoming.offset);
    }
    var end = duration();
    if (next >= end) {
      position = end;
      reveal();
      paint();
      if (allLoaded && !config.live) {
        playing = false;
        setState("ended");
        return;
      }
    } else {
      position = next;
      reveal();
      paint();
    }
    if (shown) {
      var last = entries[shown - 1].el;
      if (last.offsetTop > timeline.scrollTop + timeline.clientHeight - 40) {
        timeline.scrollTop = last.offsetTop - timeline.clientHeight + last.offsetHeight + 40;
      }
    }
    setTimeout(tick, TICK_MS);
  }

  function play() {
    following = false;
    if (position >= duration()) {
      position = entries.length ? entries[0].offset : 0; // from the first event
      reveal();
      timeline.scrollTop = 0;
    }
    playing = true;
    lastTick = performance.now();
    setState("playing");
    setTimeout(tick, TICK_MS);
  }

  function pause() {
    playing = false;
    setState("paused");
  }

  function seek(ms) {
    following = false;
    var start = entries.length ? entries[0].offset : 0;
    position = Math.max(start, Math.min(ms, duration()));
    reveal();
    paint();
    if (!playing) setState("paused");
  }

  playButton.addEventListener("click", function () {
    if (playing) pause();
    else play();
  });
  scrubber.addEventListener("click", function (e) {
    var box = scrubber.getBoundingClientRect();
    seek(((e.clientX - box.left) / box.width) * duration());
  });
  timeline.addEventListener("click", function (e) {
    // Clicking an entry's time seeks there (clicks elsewhere stay free for selecting text).
    if (!e.target.classList.contains("t")) return;
    var li = e.target.closest("li[data-seq]");
    if (!li) return;
    var entry = entries.find(function (x) { return x.seq === Number(li.dataset.seq); });
    if (entry) seek(entry.offset);
  });

  function fetchPage(limit) {
    var url = config.eventsUrl + "?after=" + lastSeq + "&limit=" + limit;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("events: HTTP " + r.status);
      return r.json();
    });
  }

  function loadAll() {
    var first = true;
    function next() {
      return fetchPage(first ? FIRST_PAGE : 2000).then(function (page) {
        add(page.events);
        if (first) {
          first = false;
          playButton.disabled = false;
          setState(config.live ? "live" : "paused");
        }
        loading.textContent = "loaded " + lastSeq + " of " + page.event_count + " events";
        if (page.more) return next();
        allLoaded = true;
        loading.textContent = lastSeq + " events";
        player.dataset.loaded = "all";
      });
    }
    return next();
  }

  function markBroken(seq) {
    var entry = entries.find(function (x) { return x.seq === seq; });
    if (entry) entry.el.classList.add("broken");
  }

  function checkIntegrity() {
    var badge = document.getElementById("integrity");
    fetch(config.integrityUrl, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (result) {
      badge.textContent = result.summary;
      badge.dataset.state = result.ok ? "ok" : "broken";
      badge.className = "badge integrity " + (result.ok ? "ok" : "terminated");
      if (result.first_broken_seq) {
        badge.dataset.brokenSeq = result.first_broken_seq;
        markBroken(result.first_broken_seq);
      }
    }).catch(function (err) {
      badge.textContent = "integrity not checked: " + err.message;
      badge.dataset.state = "error";
    });
  }

  function follow() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + config.socketPath + "?after=" + lastSeq);
    var badge = document.getElementById("live-state");
    socket.addEventListener("open", function () { player.dataset.socket = "open"; });
    socket.addEventListener("message", function (e) {
      var message = JSON.parse(e.data);
      if (message.type === "events") {
        add(message.events);
        document.getElementById("event-count").textContent = lastSeq;
      } else if (message.type === "ended") {
        config.live = false;
        player.dataset.socket = "ended";
        var status = document.getElementById("session-status");
        status.textContent = message.status;
        status.className = "badge " + message.status;
        document.getElementById("session-ended").textContent = message.reason;
        if (badge) { badge.textContent = message.status; badge.className = "badge"; }
        var form = document.getElementById("terminate-form");
        if (form) form.remove();
        checkIntegrity();
        socket.close();
      } else if (message.type === "forbidden") {
        player.dataset.socket = "forbidden";
      }
    });
    socket.addEventListener("close", function () {
      if (player.dataset.socket === "open") player.dataset.socket = "closed";
    });
  }

  if (document.getElementById("terminal") && window.AsciinemaPlayer) {
    window.AsciinemaPlayer.create(config.castUrl, document.getElementById("terminal"), {
      fit: "width",
      idleTimeLimit: 2,
      terminalFontSize: "14px",
    });
  }

  loadAll().then(function () {
    if (config.live) follow();
  }).catch(function (err) {
    loading.textContent = "could not load events: " + err.message;
    player.dataset.state = "error";
  });
  checkIntegrity();
})();
