// Visitor screen. Three parts that never wait on each other:
// - the prompt (event stream): pictogram, two languages, a cue and the spoken words. While
//   the gate cannot be reached it says "out of service" rather than leave a stale prompt up;
//   on reconnect the server sends the current prompt first.
// - the mirror (polled frames): the visitor's own picture with the judged face marked. When
//   nobody is in view, or the video stops, the picture is wiped and its canvas freed.
// - the sanitize countdown.
// Nothing accumulates: elements are reused, handlers replaced, bitmaps closed.
"use strict";
(() => {
  const OFFLINE_AFTER_MS = 5000; // a few missed reconnects (every 2 s), not one blip
  const REOPEN_MS = 2000;
  const FRAME_TIMEOUT_MS = 3000;
  const ICONS = "/static/kiosk-icons.svg";
  const read = (id) => JSON.parse(document.getElementById(id).textContent);
  const element = (id) => document.getElementById(id);
  const prompts = read("kiosk-prompts");
  const hints = read("kiosk-hints");
  const setup = read("kiosk-setup");
  const [vi, en, pictogram] = [element("prompt-vi"), element("prompt-en"), element("pictogram")];
  const [cue, speech, countdown] = [element("cue"), element("speech"), element("countdown")];
  const [stage, picture, face, faceIcon] = [
    element("stage"), element("picture"), element("face"), element("face-icon"),
  ];
  const [hint, hintIcon, hintVi, hintEn] = [
    element("hint"), element("hint-icon"), element("hint-vi"), element("hint-en"),
  ];
  const context = picture.getContext("2d");
  let shown = null;
  let volume = setup.volume;
  let offline = null;
  let ticking = null;

  // ------------------------------------------------------------ sound: cue, then words
  const say = (key) => {
    cue.pause();
    speech.pause();
    cue.onended = cue.onerror = null;
    const kind = setup.cues[key];
    if (!kind || !(volume > 0)) return;
    cue.volume = speech.volume = Math.min(1, volume);
    let spoken = false;
    const words = () => {
      if (spoken || shown !== key) return;
      spoken = true;
      speech.src = `/kiosk/sounds/${key}`;
      speech.play().catch(() => {}); // blocked by the browser: the screen still says it
    };
    cue.onended = cue.onerror = words; // a missing cue must not silence the words
    cue.src = `/kiosk/sounds/cue-${kind}`;
    cue.play().catch(words);
  };

  // ------------------------------------------------------------ the prompt
  const runCountdown = (on) => {
    clearInterval(ticking);
    if (!on) return;
    const end = Date.now() + setup.sanitize_seconds * 1000;
    const tick = () => {
      countdown.textContent = Math.max(0, Math.ceil((end - Date.now()) / 1000));
    };
    tick();
    ticking = setInterval(tick, 250);
  };

  const show = (key) => {
    if (key === shown) return; // state events repeat the prompt: show and say it once
    shown = key;
    [vi.textContent, en.textContent] = prompts[key];
    document.title = prompts[key][0];
    document.body.className = `prompt-${key}`;
    document.body.dataset.prompt = key;
    pictogram.setAttribute("href", `${ICONS}#prompt-${key}`);
    runCountdown(key === "sanitize");
    say(key);
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
      const data = JSON.parse(message.data);
      if (typeof data.volume === "number") volume = data.volume;
      if (data.prompt in prompts) show(data.prompt);
    });
  };

  // ------------------------------------------------------------ the mirror
  const still = () => {
    if (document.body.dataset.view === "still") return;
    document.body.dataset.view = "still";
    context.clearRect(0, 0, picture.width, picture.height);
    picture.width = picture.height = 0; // frees the pixels, not just hides them
    face.hidden = hint.hidden = true;
  };

  const mark = (faces) => {
    // The largest face is the one standing at the gate.
    const near = faces.reduce((a, b) => (b.w * b.h > a.w * a.h ? b : a), faces[0]);
    face.hidden = !near;
    hint.hidden = !near?.hint;
    if (!near) return;
    Object.assign(face.style, {
      left: `${near.x * 100}%`, top: `${near.y * 100}%`,
      width: `${near.w * 100}%`, height: `${near.h * 100}%`,
    });
    face.dataset.state = near.state;
    faceIcon.setAttribute("href", `${ICONS}#state-${near.state}`);
    if (near.hint) {
      hint.dataset.hint = near.hint;
      hintIcon.setAttribute("href", `${ICONS}#hint-${near.hint}`);
      [hintVi.textContent, hintEn.textContent] = hints[near.hint];
    }
  };

  const draw = (bitmap, faces) => {
    if (picture.width !== bitmap.width || picture.height !== bitmap.height) {
      picture.width = bitmap.width;
      picture.height = bitmap.height;
      stage.style.setProperty("--ratio", bitmap.width / bitmap.height);
    }
    context.drawImage(bitmap, 0, 0);
    document.body.dataset.view = "mirror";
    mark(faces);
  };

  const poll = async () => {
    try {
      const response = await fetch("/kiosk/frame", {
        cache: "no-store",
        signal: AbortSignal.timeout(FRAME_TIMEOUT_MS),
      });
      if (response.status === 200) {
        const faces = JSON.parse(response.headers.get("X-Faces") || "[]");
        const bitmap = await createImageBitmap(await response.blob());
        try {
          draw(bitmap, faces);
        } finally {
          bitmap.close();
        }
      } else {
        still();
      }
    } catch {
      still(); // the video stopped: the prompts go on without it
    }
    setTimeout(poll, 1000 / setup.fps);
  };

  connect();
  poll();
})();
