// Live page: follows the gate over server-sent events.
// Everything is built with textContent, never innerHTML: event data may carry
// visitor-influenced or staff-typed text (alert messages, override reasons).
"use strict";
(() => {
  // A flash (?done=, ?error=) or a refused form's answer is shown once: a reload, or the
  // resync below, loads the plain page instead of saying "Door unlocked once." again.
  if (location.pathname !== "/live" || location.search) history.replaceState(null, "", "/live");
  const config = JSON.parse(document.getElementById("live-config").textContent);
  const texts = config.texts;
  const feed = document.getElementById("feed");
  const alerts = document.getElementById("alerts");
  const noAlerts = document.getElementById("no-alerts");
  const status = document.getElementById("feed-status");
  const clock = new Intl.DateTimeFormat(config.lang, {
    timeZone: config.timezone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  // An open alert may wait for days, so it shows its date as the server draws it
  // (YYYY-MM-DD HH:MM:SS, which Sweden's locale writes for any reader).
  const stamp = new Intl.DateTimeFormat("sv-SE", {
    timeZone: config.timezone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const MAX_FEED = 200;
  // Decimals as the reader writes them: 0,6 in Vietnamese, 0.6 in English.
  const decimal = (value, digits) => new Intl.NumberFormat(config.lang, {
    minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false,
  }).format(Number(value));

  const label = (table, key) => (key == null ? "" : texts[table][key] || String(key));
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  };
  const setField = (name, value) => {
    for (const node of document.querySelectorAll(`[data-field="${name}"]`)) node.textContent = value;
  };

  const setClass = (name, className) => {
    for (const node of document.querySelectorAll(`[data-field="${name}"]`)) node.className = className;
  };

  // The runtime re-sends an entry as it progresses (pending, then admitted): one line per
  // visit, updated in place and moved to the top, rather than one line per update.
  function addFeed(at, cssClass, text, key) {
    if (key) feed.querySelector(`[data-key="${CSS.escape(key)}"]`)?.remove();
    const item = el("li", "feed-" + cssClass);
    if (key) item.dataset.key = key;
    item.append(el("span", "when", clock.format(new Date(at * 1000))), el("span", cssClass, text));
    feed.prepend(item);
    while (feed.children.length > MAX_FEED) feed.lastChild.remove();
  }

  // What a station event's number means depends on the event: a fluid level in percent,
  // a time in milliseconds, a fault code. Other events carry nothing worth showing.
  const PERCENT_EVENTS = new Set(["fluid_level", "fluid_low", "fluid_empty"]);
  const DURATION_EVENTS = new Set(["dispensed", "door_closed", "door_held"]);
  function stationValue(data) {
    if (data.value == null) return "";
    if (PERCENT_EVENTS.has(data.kind)) return ` · ${data.value}\u00a0%`;  // kept on one line
    if (DURATION_EVENTS.has(data.kind)) return ` · ${decimal(data.value / 1000, 1)}\u00a0s`;
    if (data.kind === "fault") return ` · ${data.value}`;
    return "";
  }

  function showState(s) {
    setField("state", label("states", s.state));
    setField("mode", label("states", s.mode));
    setField("prompt", label("prompts", s.prompt));
    setField("occupancy", s.occupancy ?? "");
    if (s.capacity != null) setField("capacity", s.capacity);
    document.getElementById("status").dataset.mode = s.mode || "";
    const camera = s.camera || {}, station = s.station || {};
    const fps = camera.fps != null ? ` · ${decimal(camera.fps, 1)} fps` : "";
    setField("camera", (camera.healthy ? texts.ui.ok : texts.ui.offline) + fps);
    setClass("camera", camera.healthy ? "link-connected" : "link-offline");
    setField("station", label("links", station.link));
    setClass("station", `link-${station.link}`);
    setField("fluid", station.fluid_percent != null ? `${station.fluid_percent} %` : "–");
  }

  function addAlert(alert, at) {
    if (alerts.querySelector(`[data-alert="${alert.id}"]`)) return;
    const item = el("li", `alert sev-${alert.severity}`);
    item.dataset.alert = alert.id;
    const form = el("form", "inline");
    form.method = "post";
    form.action = `/live/alerts/${encodeURIComponent(alert.id)}/ack`;
    const token = el("input");
    token.type = "hidden"; token.name = "csrf_token"; token.value = config.csrf;
    form.append(token, el("button", null, texts.ui.ack));
    item.append(el("span", "when", stamp.format(new Date(at * 1000))), el("strong", null, label("alerts", alert.kind)),
                el("span", "msg", label("details", alert.message)), form);
    // As the server lists them: critical alerts on top, a new warning below the last of them.
    const critical = alert.severity === "critical";
    alerts.insertBefore(item, critical ? alerts.firstChild : alerts.querySelector("li:not(.sev-critical)"));
    noAlerts.hidden = true;
  }

  const handlers = {
    state: (data) => showState(data),
    prompt: (data) => setField("prompt", label("prompts", data.prompt)),
    entry: (data, at) => {
      const admitted = data.outcome === "admitted" || data.outcome === "admitted_reminded";
      const verdict = admitted ? "admitted" : data.outcome === "pending" ? "pending" : "denied";
      const score = data.mask_score != null ? ` · ${decimal(data.mask_score, 2)}` : "";
      addFeed(at, verdict, label("outcomes", data.outcome) + score,
              data.id ? `entry-${data.id}` : null);
    },
    alert: (data, at, id) => {
      // A replayed alert the page was drawn with, or without because it is acknowledged.
      if (id > config.alertsDrawn) addAlert(data, at);
      addFeed(at, "alert", `${texts.ui.alert}: ${label("alerts", data.kind)} · ${label("details", data.message)}`);
    },
    alert_ack: (data) => {
      const item = alerts.querySelector(`[data-alert="${data.id}"]`);
      if (item) item.remove();
      noAlerts.hidden = alerts.children.length > 0;
    },
    override: (data, at) => addFeed(at, "override", `${texts.ui.override}: ${label("actions", data.action)} · ${data.actor} · ${data.reason || ""}`),
    station: (data, at) => addFeed(at, "station", `${texts.ui.station}: ${label("station", data.kind)}${stationValue(data)}`),
  };

  // The first connection replays recent history after the id the page was rendered with;
  // reconnects send Last-Event-ID automatically and get only what they missed.
  const source = new EventSource(`/live/events?after=${encodeURIComponent(config.after)}`);
  source.onopen = () => { status.textContent = status.dataset.online; };
  source.onerror = () => { status.textContent = status.dataset.offline; };
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (message) => {
      const data = JSON.parse(message.data);
      handle(data, data.at || Date.now() / 1000, Number(message.lastEventId));
    });
  }
  source.addEventListener("resync", () => window.location.reload());
})();
