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
  var terminalBox = document.getElementById("terminal");
  // A live terminal session streams into asciinema-player: its output so far is the
  // screen it starts from, then each output event from the websocket is fed to it.
  var streamTerminal = !!(terminalBox && config.live && window.AsciinemaPlayer);
  var terminalOutput = []; // output so far, until the live player starts
  var terminalSize = { cols: 80, rows: 24 };
  var liveTerminal = null; // the live driver's dispatch, once the player plays

  // Entries are rendered as HTML text, a page of events at a time: one parse of a string
  // is several times faster than building 100,000 entries node by node. Every value goes
  // through esc(): recorded data is never markup.
  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(value) {
    return value === undefined || value === null ? "" : String(value).replace(/[&<>"']/g, function (c) { return ESC[c]; });
  }
  function span(cls, text) { return '<span class="' + cls + '">' + esc(text) + "</span>"; }

  function fmtTime(ms) {
    var s = Math.max(0, ms) / 1000;
    var m = Math.floor(s / 60);
    var rest = (s - m * 60).toFixed(1);
    return m + ":" + (rest < 10 ? "0" : "") + rest;
  }

  function duration() {
    return entries.length ? entries[entries.length - 1].offset : 0;
  }

  function resultHtml(p) {
    var columns = Array.isArray(p.columns) ? p.columns : [];
    var rows = Array.isArray(p.first_rows) ? p.first_rows : [];
    var html = '<div class="result">';
    if (columns.length) {
      html += '<table class="rows"><thead><tr>';
      columns.forEach(function (c) { html += "<th>" + esc(c) + "</th>"; });
      html += "</tr></thead><tbody>";
      rows.forEach(function (row) {
        html += "<tr>";
        (Array.isArray(row) ? row : [row]).forEach(function (v) {
          if (v === null) html += '<td class="null">NULL</td>';
          else if (typeof v === "object") html += '<td class="binary">' + esc(JSON.stringify(v)) + "</td>"; // {"base64": ...}
          else html += "<td>" + esc(v) + "</td>";
        });
        html += "</tr>";
      });
      html += "</tbody></table>";
    }
    var facts = [];
    if (p.command_tag) facts.push(p.command_tag);
    if (p.rows !== undefined) facts.push(p.rows + " rows");
    if (rows.length && p.rows > rows.length) facts.push("first " + rows.length + " recorded");
    if (p.masked) facts.push(p.masked + " values masked");
    if (p.duration_ms !== undefined) facts.push(p.duration_ms + " ms");
    return html + span("muted", facts.join(" · ")) + "</div>";
  }

  function body(kind, p) {
    switch (kind) {
      case "statement":
        // The gateway notes the decision on the statement itself; deny and review also get
        // a decision event of their own, with the policy and message.
        return '<code class="sql">' + esc(p.text) + "</code>" +
          (Array.isArray(p.params) && p.params.length ? span("params", "params: " + JSON.stringify(p.params)) : "") +
          (p.action ? span("badge decision " + esc(p.action), p.action) + (p.rule ? span("rule", "rule " + p.rule) : "") : "") +
          // The usual statement carries its result; otherwise the result is an event of its own.
          (p.result && typeof p.result === "object" ? resultHtml(p.result) : "");
      case "decision":
        return span("badge decision " + esc(p.action), p.action) + span("rule", (p.rule ? "rule " + p.rule : "no rule") +
          (p.policy ? " · policy " + p.policy + (p.policy_version ? " v" + p.policy_version : "") : "") +
          (p.cached ? " · cached" : "") + (p.message ? " · " + p.message : ""));
      case "result":
        return resultHtml(p);
      case "error":
        return span("badge terminated", "error " + (p.code || "")) + span("message", p.message);
      case "notice":
        return span("message muted", (p.severity || "NOTICE") + ": " + (p.message || ""));
      case "approval":
        // The gateway records the outcome ({action, rule, message}); who decided and why is
        // listed under "Approval requests" above the player.
        return span("badge role", "approval " + (p.state || p.action || "")) + span("message", (p.by ? "by " + p.by : "") +
          (p.reason ? ": " + p.reason : "") + (p.message ? p.message : "") + (p.request_id ? " (request " + p.request_id + ")" : ""));
      case "output":
      case "input":
        return '<pre class="tty ' + kind + '">' + esc(p.data) + "</pre>";
      case "dropped":
        return span("badge terminated", p.count + " events not recorded") + span("message", p.reason);
      case "session_start":
        return span("message muted", "session started by " + (p.agent || "?") +
          (p.on_behalf_of ? " for " + p.on_behalf_of : "") + (p.client_address ? " from " + p.client_address : ""));
      case "session_end":
        return span("message muted", "session " + (p.status || "ended") + ": " + (p.reason || ""));
      default:
        return "<code>" + esc(JSON.stringify(p)) + "</code>";
    }
  }

  function add(events) {
    var html = "";
    var fresh = [];
    events.forEach(function (event) {
      if (event.seq <= lastSeq) return;
      lastSeq = event.seq;
      var kind = /^[a-z_]+$/.test(event.kind) ? event.kind : "unknown";
      if (streamTerminal) toTerminal(kind, event.payload || {});
      var hide = !following && event.offset_ms > position;
      html += '<li class="ev ev-' + kind + '" data-seq="' + event.seq + '" data-kind="' + kind + '"' +
        (hide ? " hidden" : "") + '><span class="t" title="' + esc(event.at) + '">' + fmtTime(event.offset_ms) +
        "</span>" + body(kind, event.payload || {}) + "</li>";
      fresh.push({ seq: event.seq, offset: event.offset_ms, el: null, hidden: hide });
    });
    if (!fresh.length) return;
    // Each page of events is a block of its own: the browser lays out and paints only the
    // blocks on screen (content-visibility), so a timeline of 100,000 entries stays cheap.
    var block = document.createElement("ol");
    block.className = "block";
    // Its height until first laid out (then the browser remembers the real one): an
    // estimate, so the scroll bar is about right before the block is ever seen.
    block.style.containIntrinsicSize = "auto " + fresh.length * 40 + "px";
    block.innerHTML = html;
    timeline.appendChild(block);
    var nodes = block.children;
    fresh.forEach(function (entry, i) {
      entry.el = nodes[i];
      if (!entry.hidden) shown = entries.length + 1;
      entries.push(entry);
    });
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

  function fetchPage(after, limit) {
    var url = config.eventsUrl + "?after=" + after + "&limit=" + limit;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("events: HTTP " + r.status);
      return r.json();
    });
  }

  function loadAll() {
    // The first page is small so the first screen comes quickly; after it, the next page is
    // requested before the current one is rendered, so the server and the page work at once.
    var PAGE = 2000;
    function step(pending) {
      return pending.then(function (page) {
        var next = page.more ? fetchPage(page.last_seq, PAGE) : null;
        add(page.events);
        loading.textContent = "loaded " + lastSeq + " of " + page.event_count + " events";
        if (next) return step(next);
        allLoaded = true;
        loading.textContent = lastSeq + " events";
        player.dataset.loaded = "all";
      });
    }
    return fetchPage(0, FIRST_PAGE).then(function (page) {
      var next = page.more ? fetchPage(page.last_seq, PAGE) : null;
      add(page.events);
      playButton.disabled = false;
      setState(config.live ? "live" : "paused");
      // The check reads every event: asked for once the first screen is up.
      checkIntegrity();
      if (!next) {
        allLoaded = true;
        loading.textContent = lastSeq + " events";
        player.dataset.loaded = "all";
        return;
      }
      loading.textContent = "loaded " + lastSeq + " of " + page.event_count + " events";
      return step(next);
    });
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
        if (terminalBox && terminalBox.dataset.live) terminalBox.dataset.live = "ended";
        player.dataset.socket = "ended";
        var status = document.getElementById("session-status");
        status.textContent = message.status;
        status.className = "badge " + message.status;
        document.getElementById("session-ended").textContent = message.reason;
        if (badge) { badge.textContent = message.status; badge.className = "badge"; }
        ["terminate-form", "termination-pending"].forEach(function (id) {
          var node = document.getElementById(id);
          if (node) node.remove();
        });
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

  function toTerminal(kind, p) {
    if (kind === "session_start") {
      var size = function (v, d) { return typeof v === "number" && v > 0 && v < 1000 ? v : d; };
      terminalSize = { cols: size(p.term_width, 80), rows: size(p.term_height, 24) };
    } else if (kind === "output" && typeof p.data === "string") {
      if (liveTerminal) liveTerminal("output", p.data);
      else terminalOutput.push(p.data);
    }
  }

  // An asciinema-player driver (a function, as the player's own drivers are) that plays
  // what this page receives: the output so far as the starting screen, then each event.
  function liveDriver(callbacks) {
    var started = performance.now();
    return {
      play: function () {
        callbacks.dispatch("play");
        callbacks.dispatch("reset", { size: terminalSize, init: terminalOutput.join(""), theme: null });
        terminalOutput = [];
        callbacks.dispatch("playing");
        liveTerminal = callbacks.dispatch;
        terminalBox.dataset.live = "streaming";
        return true;
      },
      stop: function () { liveTerminal = null; },
      getTiming: function () { return { time: (performance.now() - started) / 1000, rate: 1 }; },
    };
  }

  function startTerminal() {
    if (!terminalBox || !window.AsciinemaPlayer) return;
    if (streamTerminal && config.live) {
      window.AsciinemaPlayer.create(liveDriver, terminalBox, {
        autoPlay: true,
        controls: false,
        fit: "width",
        terminalFontSize: "14px",
        cols: terminalSize.cols,
        rows: terminalSize.rows,
      });
    } else {
      streamTerminal = false;
      window.AsciinemaPlayer.create(config.castUrl, terminalBox, {
        fit: "width",
        idleTimeLimit: 2,
        terminalFontSize: "14px",
      });
    }
  }

  // A recording plays from its asciicast at once; a live one starts once the events so far
  // are loaded (its starting screen).
  if (!streamTerminal) startTerminal();

  loadAll().then(function () {
    if (streamTerminal) startTerminal();
    if (config.live) follow();
  }).catch(function (err) {
    loading.textContent = "could not load events: " + err.message;
    player.dataset.state = "error";
  });
})();
