/* BackApp web console: live progress and log lines (server-sent events from /events), and the
   schedule fields of the configuration form. Every page still reads without it. */
(function () {
  "use strict";

  var MAX_LINES = 50;
  var UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  var PHASES = { scanning: "Scanning", archiving: "Archiving", uploading: "Uploading", finishing: "Finishing" };

  /* The same text as the server's progress_text filter (backend/web/_status_text.py). */
  function isCount(value) { return typeof value === "number" && isFinite(value); }

  function filesize(size) {
    if (size < 1024) return Math.floor(size) + " B";
    var value = size;
    for (var i = 0; i < UNITS.length; i++) {
      value /= 1024;
      if (value < 1024 || i === UNITS.length - 1) return value.toFixed(1) + " " + UNITS[i];
    }
    return "";
  }

  function duration(ms) {
    if (ms < 1000) return ms + " ms";
    var seconds = ms / 1000;
    if (seconds < 10) return seconds.toFixed(1) + " s";
    var whole = Math.round(seconds);
    if (whole < 60) return whole + " s";
    var minutes = Math.floor(whole / 60), secs = whole % 60;
    if (minutes < 60) return secs ? minutes + " min " + secs + " s" : minutes + " min";
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return minutes ? hours + " h " + minutes + " min" : hours + " h";
  }

  function count(n) { return Math.floor(n).toLocaleString("en-US"); }

  function progressText(p) {
    var parts = [PHASES[p.phase] || "Running"];
    if (p.phase === "scanning") { /* what the scan found so far */
      if (isCount(p.filesTotal)) parts.push(count(p.filesTotal) + " files");
      if (isCount(p.bytesTotal)) parts.push(filesize(p.bytesTotal));
      return parts.join(" · ");
    }
    if (typeof p.waiting === "string" && p.waiting) parts.push(p.waiting); /* no rate nor ETA then */
    if (isCount(p.filesDone)) parts.push(p.filesTotal ? count(p.filesDone) + " / " + count(p.filesTotal) + " files" : count(p.filesDone) + " files");
    if (isCount(p.bytesDone)) parts.push(p.bytesTotal ? filesize(p.bytesDone) + " / " + filesize(p.bytesTotal) : filesize(p.bytesDone));
    if (p.waiting) return parts.join(" · ");
    if (isCount(p.rate) && Math.floor(p.rate) > 0) parts.push(filesize(Math.floor(p.rate)) + "/s");
    if (typeof p.limit === "string" && p.limit) parts.push(p.limit); /* "limited to 10 Mbit/s" */
    if (isCount(p.eta)) parts.push("about " + duration(Math.floor(p.eta) * 1000) + " left");
    return parts.join(" · ");
  }

  function progressPercent(p) {
    if (p.phase === "scanning") return null;
    if (isCount(p.bytesDone) && p.bytesTotal) return Math.max(0, Math.min(100, Math.floor(p.bytesDone * 100 / p.bytesTotal)));
    if (isCount(p.filesDone) && p.filesTotal) return Math.max(0, Math.min(100, Math.floor(p.filesDone * 100 / p.filesTotal)));
    return null;
  }

  /* Ask app.js to refresh the live regions these events concern (a backup started or finished, an
     agent came or went, an alert opened...), at most every 0.5 s. ``event`` null: every region. */
  var refreshTimer = null, refreshEvents = [];
  function refreshSoon(event) {
    if (refreshEvents !== null) {
      if (event) refreshEvents.push(event); else refreshEvents = null;
    }
    if (refreshTimer !== null) return;
    refreshTimer = window.setTimeout(function () {
      var events = refreshEvents;
      refreshTimer = null;
      refreshEvents = [];
      document.dispatchEvent(new CustomEvent("backapp:refresh", { detail: events ? { events: events } : {} }));
    }, 500);
  }

  /* A backup this page does not show yet (it just started): refresh once for it, not on every event
     (it may simply not belong on this page). */
  var refreshedFor = {};

  function fill(boxes, event) {
    var text = progressText(event), pct = progressPercent(event);
    boxes.forEach(function (box) {
      var bar = box.querySelector("progress"), label = box.querySelector(".progress-text");
      if (bar) {
        if (pct === null) bar.removeAttribute("value"); else bar.value = pct;
        bar.textContent = pct === null ? "" : pct + "%";
      }
      if (label) label.textContent = text;
      box.hidden = false;
    });
  }

  /* A run whose backup log is not open yet (the scan; a small archive being built) reports by
     config: shown in [data-config-progress-for] until its backup's own events take over. Kept
     here, as the server keeps none, and put back when app.js replaces a live region. */
  var STALE_MS = 60000; /* no word for a minute: the run died before its log opened */
  var SUPERSEDED_MS = 10000; /* a late pre-log event after the backup started is ignored */
  var configProgress = {}, backupSeen = {};

  function showConfig(id) {
    var entry = configProgress[id];
    var boxes = document.querySelectorAll('[data-config-progress-for="' + CSS.escape(id) + '"]');
    if (entry) fill(boxes, entry.event);
    else boxes.forEach(function (box) { box.hidden = true; });
  }

  function clearConfig(id) {
    if (!configProgress[id]) return;
    delete configProgress[id];
    showConfig(id);
  }

  function onConfigProgress(event) {
    var id = String(event.configId || "");
    if (!id) return;
    if (backupSeen[id] && Date.now() - backupSeen[id] < SUPERSEDED_MS) return;
    configProgress[id] = { event: event, at: Date.now() };
    showConfig(id);
  }

  function onBackup(event) {
    if (event.configId) {
      var id = String(event.configId);
      if (event.status === "running") backupSeen[id] = Date.now(); else delete backupSeen[id];
      clearConfig(id);
    }
    refreshSoon(event);
  }

  function onProgress(event) {
    if (event.backupId === null || event.backupId === undefined) { onConfigProgress(event); return; }
    if (event.configId) { backupSeen[String(event.configId)] = Date.now(); clearConfig(String(event.configId)); }
    var id = String(event.backupId);
    var boxes = document.querySelectorAll('[data-progress-for="' + CSS.escape(id) + '"]');
    if (!boxes.length) {
      if (!refreshedFor[id]) { refreshedFor[id] = true; refreshSoon(event); }
      return;
    }
    fill(boxes, event);
  }

  function onLog(event) {
    document.querySelectorAll("[data-live-feed]").forEach(function (feed) {
      var only = feed.dataset.agentId;
      if (only && only !== event.agentId) return;
      var list = feed.querySelector(".live-log");
      if (!list) return;
      var item = document.createElement("li");
      item.className = "live-line level-" + String(event.level);
      var when = document.createElement("time");
      when.setAttribute("datetime", String(event.timestamp || ""));
      when.textContent = event.timestamp ? new Date(event.timestamp).toLocaleTimeString() : "";
      var level = document.createElement("span");
      level.className = "badge badge-" + ({ error: "bad", warning: "warn", info: "info" }[event.level] || "muted");
      level.textContent = String(event.level);
      var agent = document.createElement("span");
      agent.className = "muted";
      agent.textContent = String(event.agentName || "");
      var message = document.createElement("span");
      message.className = "live-message";
      message.textContent = String(event.message || "");
      item.append(when, " ", level, " ", agent, " ", message);
      list.prepend(item);
      while (list.children.length > MAX_LINES) list.removeChild(list.lastElementChild);
      var empty = feed.querySelector("[data-live-feed-empty]");
      if (empty) empty.hidden = true;
    });
  }

  function startEvents() {
    if (!window.EventSource) return;
    if (!document.querySelector("[data-live], [data-live-feed], [data-progress-for], [data-config-progress-for]")) return;
    var source = new EventSource("/events"), opened = false;
    source.addEventListener("open", function () {
      document.documentElement.dataset.liveEvents = "open";
      if (opened) refreshSoon(null); /* reconnected: what changed meanwhile was not heard */
      opened = true;
    });
    source.addEventListener("message", function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (!event || typeof event !== "object") return;
      if (event.type === "progress") onProgress(event);
      else if (event.type === "log") { onLog(event); refreshSoon(event); }
      else if (event.type === "backup") onBackup(event);
      else refreshSoon(event); /* runRequest, agent, alert, restore */
    });
    document.addEventListener("backapp:refreshed", function () { Object.keys(configProgress).forEach(showConfig); });
    window.setInterval(function () {
      var now = Date.now();
      Object.keys(configProgress).forEach(function (id) {
        if (now - configProgress[id].at > STALE_MS) clearConfig(id);
      });
    }, 5000);
    window.addEventListener("pagehide", function () { source.close(); });
  }

  /* The configuration form: only the fields of the chosen kind of schedule. */
  function startScheduleFields() {
    var kind = document.getElementById("schedule_kind");
    if (!kind) return;
    function apply() {
      document.querySelectorAll("[data-schedule-show]").forEach(function (el) {
        el.hidden = el.dataset.scheduleShow.split(" ").indexOf(kind.value) < 0;
      });
    }
    kind.addEventListener("change", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", function () {
    startScheduleFields();
    startEvents();
  });
})();
