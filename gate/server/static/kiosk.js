// Visitor screen: swaps the two-language prompt when the controller changes it.
"use strict";
(() => {
  const prompts = JSON.parse(document.getElementById("kiosk-prompts").textContent);
  const vi = document.getElementById("prompt-vi");
  const en = document.getElementById("prompt-en");
  const source = new EventSource("/kiosk/events");
  source.addEventListener("prompt", (message) => {
    const key = JSON.parse(message.data).prompt;
    if (!(key in prompts)) return;
    [vi.textContent, en.textContent] = prompts[key];
    document.title = prompts[key][0];
    document.body.className = `prompt-${key}`;
    document.body.dataset.prompt = key;
  });
})();
