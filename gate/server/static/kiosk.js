// Visitor screen: swaps the two-language prompt when the controller changes it. While the
// gate cannot be reached it says "out of service" rather than leave a stale prompt up; on
// reconnect the server sends the current prompt first.
"use strict";
(() => {
  const OFFLINE_AFTER_MS = 5000; // a few missed reconnects (every 2 s), not one blip
  const REOPEN_MS = 2000;
  const prompts = JSON.parse(document.getElementById("kiosk-prompts").textContent);
  const vi = document.getElementById("prompt-vi");
  const en = document.getElementById("prompt-en");
  let offline = null;

  const show = (key) => {
    [vi.textContent, en.textContent] = prompts[key];
    document.title = prompts[key][0];
    document.body.className = `prompt-${key}`;
    document.body.dataset.prompt = key;
  };

  const connect = () => {
    const source = new EventSource("/kiosk/events");
    source.addEventListener("open", () => {
      clearTimeout(offline);
      offline = null;
    });
    source.addEventListener("error", () => {
      offline ??= setTimeout(() => show("out_of_service"), OFFLINE_AFTER_MS);
      // Refused outright (e.g. a proxy's 502), EventSource gives up: open a new one.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, REOPEN_MS);
    });
    source.addEventListener("prompt", (message) => {
      const key = JSON.parse(message.data).prompt;
      if (key in prompts) show(key);
    });
  };
  connect();
})();
