/* BackApp web console: the few things that need a script. Every page reads without it. */
(function () {
  "use strict";

  /* Live regions: <div data-live="name"> is refreshed from the same URL, asking only for that
     region (header X-Backapp-Live), when the event stream (live.js) says something it shows
     changed: never on a timer, so an open page costs nothing while nothing happens. A region names
     the event types it shows in data-live-on (all when absent) and may narrow them to one agent,
     config or backup (data-live-agent, data-live-config, data-live-backup). A region that changed
     while the tab was hidden is refreshed when the tab is shown again; the focused element is kept. */
  function refresh(region) {
    if (document.hidden) { region.dataset.liveStale = "1"; return Promise.resolve(); }
    delete region.dataset.liveStale;
    return fetch(window.location.href, {
      headers: { "X-Backapp-Live": region.dataset.live },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual"
    }).then(function (response) {
      if (response.status === 401 || response.type === "opaqueredirect") {
        window.location.reload(); /* the session ended: the page goes to the sign-in form */
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html === null || html === undefined || html === region.dataset.lastHtml) return;
      var focused = document.activeElement;
      var focusKey = focused && region.contains(focused) ? focused.getAttribute("href") || focused.id : null;
      region.innerHTML = html;
      region.dataset.lastHtml = html;
      if (focusKey) {
        var again = region.querySelector('[href="' + CSS.escape(focusKey) + '"]') || document.getElementById(focusKey);
        if (again) again.focus();
      }
      region.dispatchEvent(new CustomEvent("backapp:refreshed", { bubbles: true }));
    }).catch(function () { /* offline for a moment: try again next time */ });
  }

  var SCOPES = { liveAgent: "agentId", liveConfig: "configId", liveBackup: "backupId" };

  /* Whether ``event`` (from the stream) may change what ``region`` shows. */
  function concerns(region, event) {
    var on = region.dataset.liveOn;
    if (on && on.split(" ").indexOf(String(event.type)) < 0) return false;
    return Object.keys(SCOPES).every(function (key) {
      var want = region.dataset[key], got = event[SCOPES[key]];
      return !want || got === undefined || got === null || String(got) === want;
    });
  }

  function startLive() {
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length) return;
    regions.forEach(function (region) { region.dataset.lastHtml = region.innerHTML; });
    var poll = Number(document.documentElement.dataset.livePoll || 0);
    if (poll > 0) { /* the server says events may not reach this page: poll as a fallback */
      window.setInterval(function () { regions.forEach(refresh); }, poll);
    }
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) return;
      regions.forEach(function (region) { if (region.dataset.liveStale) refresh(region); });
    });
    /* live.js asks for this with the events that came (none: every region, e.g. after the
       stream reconnected and may have missed some) */
    document.addEventListener("backapp:refresh", function (e) {
      var events = e.detail && e.detail.events;
      regions.forEach(function (region) {
        if (!events || events.some(function (event) { return concerns(region, event); })) refresh(region);
      });
    });
  }

  /* Copy buttons: <button data-copy="element-id" hidden> (shown only when copying works). */
  function startCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) return;
      button.hidden = false;
      var label = button.textContent;
      button.addEventListener("click", function () {
        var source = document.getElementById(button.dataset.copy);
        if (!source) return;
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "Copied";
          var status = document.getElementById("copy-status");
          if (status) status.textContent = label.replace(/^Copy /, "") + " copied to the clipboard.";
          window.setTimeout(function () { button.textContent = label; }, 2000);
        });
      });
    });
  }

  /* The config form: the agent picker and its note only for agent-based configs. */
  function startModeSwitch() {
    var radios = document.querySelectorAll('input[name="execution_mode"]');
    if (!radios.length) return;
    function apply() {
      var checked = document.querySelector('input[name="execution_mode"]:checked');
      var mode = checked ? checked.value : "agent";
      document.querySelectorAll("[data-show-when]").forEach(function (el) {
        el.hidden = el.dataset.showWhen !== mode;
      });
    }
    radios.forEach(function (radio) { radio.addEventListener("change", apply); });
    apply();
  }

  /* Times: show the reader's local time in the tooltip (the page says UTC without a script). */
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) el.title = when.toLocaleString();
    });
  }

  // The config form's "what-if": which existing backups the retention typed so far would remove.
  function startRetentionPreview() {
    var box = document.getElementById("retention-preview");
    if (!box) return;
    var form = box.closest("form");
    var names = ["retention_days", "keep_last", "keep_hourly", "keep_daily", "keep_weekly",
      "keep_monthly", "keep_yearly"];
    var camel = ["retentionDays", "keepLast", "keepHourly", "keepDaily", "keepWeekly",
      "keepMonthly", "keepYearly"];
    var timer = null;
    function whole(name) {
      var el = form.elements[name];
      var value = el ? el.value.trim() : "";
      if (value === "") return 0;
      return /^\d+$/.test(value) ? parseInt(value, 10) : null;
    }
    function show() {
      var body = { retention: {} };
      for (var i = 0; i < names.length; i++) {
        var n = whole(names[i]);
        if (n === null) { box.textContent = ""; return; }
        if (i === 0) body.retentionDays = n; else body.retention[camel[i]] = n;
      }
      var token = form.elements._csrf ? form.elements._csrf.value : "";
      fetch(box.dataset.previewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "x-csrftoken": token },
        body: JSON.stringify(body)
      }).then(function (response) {
        return response.ok ? response.json() : null;
      }).then(function (data) {
        if (!data) { box.textContent = ""; return; }
        var total = data.remove.length + data.keep.length;
        box.textContent = "";
        var p = document.createElement("p");
        p.className = "hint";
        p.textContent = data.remove.length
          ? "If saved, this policy removes " + data.remove.length + " of the " + total +
            " existing backups (periods in " + data.timezone + "):"
          : "If saved, this policy removes none of the " + total + " existing backups.";
        box.appendChild(p);
        if (data.remove.length) {
          var ul = document.createElement("ul");
          ul.className = "preview-remove";
          data.remove.forEach(function (b) {
            var li = document.createElement("li");
            li.dataset.backupId = b.id;
            li.textContent = (b.finishedAt || "") + " (" + b.type + ")";
            ul.appendChild(li);
          });
          box.appendChild(ul);
        }
      }).catch(function () { box.textContent = ""; });
    }
    names.forEach(function (name) {
      var el = form.elements[name];
      if (!el) return;
      el.addEventListener("input", function () {
        window.clearTimeout(timer);
        timer = window.setTimeout(show, 300);
      });
    });
    show();
  }

  document.addEventListener("backapp:refreshed", function (event) { localTimes(event.target); });
  document.addEventListener("DOMContentLoaded", function () {
    startLive();
    startCopy();
    startModeSwitch();
    startRetentionPreview();
    localTimes(document);
  });
})();
