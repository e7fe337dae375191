"""The visitor's screen in Debian's Chromium: simulated visitors walk through every prompt.

The pictures are the simulated camera's visitors (no mask, mask under the nose, mask
worn, too far, too near) and their face boxes come from the real detector and mask
classifier. The panel runs over the stand-in runtime, which the test moves from prompt
to prompt as the controller would, so each prompt can be held for its screenshot.
Screenshots of every prompt, landscape and portrait, land in artifacts/screenshots/kiosk/
(the README shows the copies in docs/kiosk/).

Chromium runs with autoplay allowed, as the kiosk's own browser is set up to.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import playwright.sync_api as playwright_api
import pytest
from PIL import Image

from gate.camera.pipeline import Vision
from gate.camera.simulated import SimulatedCamera, SimVisitor
from gate.camera.verdict import FrameAnalysis, MaskLabel
from gate.config import CameraSettings, KioskSettings
from gate.server.audio import PROMPT_CUES
from gate.server.i18n import translate
from gate.server.texts import PROMPTS
from tests.panel_support import FakeRuntime, LiveServer, make_app
from tests.test_browser_panel import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "artifacts" / "screenshots" / "kiosk"
SCREENS = {
    "landscape": {"width": 1920, "height": 1080},
    "portrait": {"width": 1080, "height": 1920},
    "small": {"width": 1024, "height": 600},
}
# The soak's length: 3 minutes in the suite; KIOSK_SOAK_MINUTES=30 for the long run.
SOAK_MINUTES = float(os.environ.get("KIOSK_SOAK_MINUTES", "3"))
MIN_LARGE_TEXT_PX = 24  # WCAG 2.1: 18 pt is large text (14 pt bold: 18.67 px)
MIN_CONTRAST = 4.5  # large text needs 3:1 for AA; every prompt keeps the normal text's 4.5:1


@dataclass(frozen=True)
class Sight:
    """One moment of the camera: the frame and what the real models saw in it."""

    frame: np.ndarray
    analysis: FrameAnalysis


# What the camera shows for each prompt (None: nobody in view), in the order a visit goes.
WALK: list[tuple[str, str | None]] = [
    ("idle", None),
    ("checking", "far"),
    ("wear_mask", "no_mask"),
    ("pull_mask_up", "under_nose"),
    ("checking", "near"),
    ("sanitize", "mask"),
    ("enter", "mask"),
    ("wait_full", "mask"),
    ("lockdown", "mask"),
    ("emergency", None),
    ("out_of_service", None),
]


@pytest.fixture(scope="module")
def sights(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> dict[str, Sight]:
    """Simulated visitors, judged by the real models over a few frames so labels settle."""
    data = tmp_path_factory.mktemp("kiosk") / "data"
    data.mkdir()
    (data / "models").symlink_to(models_dir)
    looks = {
        "no_mask": MaskLabel.NO_MASK,
        "under_nose": MaskLabel.INCORRECT_MASK,
        "mask": MaskLabel.MASK,
        "far": MaskLabel.MASK,
        "near": MaskLabel.MASK,
    }
    found: dict[str, Sight] = {}
    vision = Vision(CameraSettings(), data)
    try:
        for name, label in looks.items():
            camera = SimulatedCamera([SimVisitor(name, ((10.0, label),))], seed=4)
            frame = camera.render(2.0)
            if name == "far":  # the visitor a step further back
                frame = _step(frame, 0.6)
            elif name == "near":  # right in front of the lens
                frame = _step(frame, 1.7)
            at = 1000.0 + len(found) * 100
            analyses = [vision.analyze(frame, at + i / 15) for i in range(12)]
            first, settled = analyses[0], analyses[-1]
            assert len(settled.faces) == 1, name
            found[name] = Sight(frame, first if name in ("far", "near") else settled)
    finally:
        vision.close()
    assert found["no_mask"].analysis.faces[0].label is MaskLabel.NO_MASK
    assert found["under_nose"].analysis.faces[0].label is MaskLabel.INCORRECT_MASK
    return found


def _step(frame: np.ndarray, scale: float) -> np.ndarray:
    """The scene as if the visitor stood nearer (>1) or further (<1), about the face."""
    h, w = frame.shape[:2]
    m = np.array([[scale, 0, w / 2 * (1 - scale)], [0, scale, h * 0.4 * (1 - scale)]], np.float32)
    return cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_api.Browser]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeRuntime]]:
    app, runtime = make_app(tmp_path)
    runtime.frame = runtime.analysis = None  # nobody in view, until a visitor comes
    with LiveServer(app) as live:
        yield live, runtime


# Test-side observers (not page code): what the media elements did, and every frame fetched.
OBSERVE = """
window.heard = [];
for (const kind of ["play", "playing", "error"]) {
  document.addEventListener(kind, (e) => window.heard.push(
    {id: e.target.id, kind, src: e.target.currentSrc || e.target.src || ""}), true);
}
"""


@pytest.fixture
def open_kiosk(
    browser: playwright_api.Browser, served: tuple[LiveServer, FakeRuntime]
) -> Iterator[Callable[..., playwright_api.Page]]:
    """Opens the kiosk page on a screen of the given kind; all are closed before the server."""
    contexts: list[playwright_api.BrowserContext] = []

    def open_page(screen: str, observe: bool = True) -> playwright_api.Page:
        contexts.append(browser.new_context(viewport=SCREENS[screen], device_scale_factor=0.5))
        page = contexts[-1].new_page()
        if observe:
            page.add_init_script(OBSERVE)
        page.goto(f"{served[0].url}/kiosk")
        return page

    yield open_page
    for context in contexts:
        context.close()


# The face mark and the hint the mirror shows now (null when hidden).
FACE_STATE = """(() => ({
    face: document.getElementById("face").checkVisibility()
          ? document.getElementById("face").dataset.state : null,
    hint: document.getElementById("hint").checkVisibility()
          ? document.getElementById("hint").dataset.hint : null}))()"""


def until(page: playwright_api.Page, script: str, seconds: float = 30) -> Any:
    """Poll a script until it is truthy (wait_for_function would need 'unsafe-eval')."""
    deadline = time.monotonic() + seconds
    while not (value := page.evaluate(script)):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        page.wait_for_timeout(50)
    return value


def save_shot(page: playwright_api.Page, name: str) -> None:
    """A screenshot in 64 colours: small enough to keep in the repository (docs/kiosk/)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    shot.quantize(colors=64).save(SHOTS / f"{name}.png", optimize=True)


def move(live: LiveServer, runtime: FakeRuntime, prompt: str, sight: Sight | None) -> None:
    """What the camera sees now, and the prompt the controller publishes for it."""
    runtime.frame = None if sight is None else sight.frame
    runtime.analysis = None if sight is None else sight.analysis
    runtime.state["prompt"] = prompt
    live.call(runtime.bus.publish, "prompt", {"prompt": prompt})


def settled_on(page: playwright_api.Page, prompt: str, view: str) -> None:
    until(page, f"document.body.dataset.prompt === '{prompt}'")
    until(page, f"document.body.dataset.view === '{view}'")


def wait_for_stream(runtime: FakeRuntime, pages: int) -> None:
    deadline = time.monotonic() + 10
    while runtime.bus.subscriber_count < pages:
        assert time.monotonic() < deadline, "the kiosk's event stream did not open"
        time.sleep(0.05)


def test_simulated_visitors_walk_through_every_prompt(
    open_kiosk: Callable[..., playwright_api.Page],
    served: tuple[LiveServer, FakeRuntime],
    sights: dict[str, Sight],
) -> None:
    """Every prompt, in both orientations: its pictogram, its words in Vietnamese then
    English, the mirror with the judged face (or the still screen), and a screenshot."""
    live, runtime = served
    pages = {screen: open_kiosk(screen) for screen in SCREENS}
    wait_for_stream(runtime, len(pages))
    shown: set[str] = set()
    for prompt, look in WALK:
        sight = sights[look] if look else None
        move(live, runtime, prompt, sight)
        face = sight.analysis.faces[0] if sight else None
        marked = "null" if face is None else f"'{face.label.value if face.settled else 'checking'}'"
        hinted = {"far": "'closer'", "near": "'back'"}.get(look or "", "null")
        for screen, page in pages.items():
            settled_on(page, prompt, "mirror" if sight else "still")
            until(page, f"{FACE_STATE}.face === {marked} && {FACE_STATE}.hint === {hinted}")
            state = page.evaluate("""() => ({
                vi: document.getElementById("prompt-vi").textContent,
                en: document.getElementById("prompt-en").textContent,
                icon: document.getElementById("pictogram").getAttribute("href"),
                sanitizing: getComputedStyle(document.querySelector(".sanitize-only")).display,
                countdown: Number(document.getElementById("countdown").textContent),
            })""")
            assert state["vi"] == translate("vi", PROMPTS[prompt])
            assert state["en"] == translate("en", PROMPTS[prompt])
            assert state["icon"].endswith(f"#prompt-{prompt}")
            assert (state["sanitizing"] != "none") == (prompt == "sanitize")
            if prompt == "sanitize":
                assert 0 < state["countdown"] <= runtime.settings.policy.sanitizer_timeout_seconds
            if screen != "small":
                name = prompt if look not in ("far", "near") else f"{prompt}-{look}"
                save_shot(page, f"{screen}-{name}")
        shown.add(prompt)
    assert shown == set(PROMPTS)


def _luminance(rgb: str) -> float:
    """WCAG 2.1 relative luminance of a computed 'rgb(r, g, b)' colour."""
    channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_contrast_text_size_and_fit_of_every_prompt_on_every_screen(
    open_kiosk: Callable[..., playwright_api.Page], served: tuple[LiveServer, FakeRuntime]
) -> None:
    """WCAG 2.1 AA for large text, computed from the colours Chromium actually paints:
    text and pictogram against the prompt's background, the words at least 24 px, the
    pictogram large, and everything on the screen without scrolling."""
    live, runtime = served
    for screen in SCREENS:
        page = open_kiosk(screen)
        wait_for_stream(runtime, 1)
        viewport = SCREENS[screen]
        for prompt in PROMPTS:
            move(live, runtime, prompt, None)
            settled_on(page, prompt, "still")
            page.wait_for_timeout(400)  # the background's colour transition (0.3 s)
            look = page.evaluate("""() => {
                const style = (sel) => getComputedStyle(document.querySelector(sel));
                const box = (sel) => document.querySelector(sel).getBoundingClientRect().toJSON();
                const shown = [".pictogram", "#prompt-vi", "#prompt-en"];
                if (document.body.dataset.prompt === "sanitize") shown.push(".pointer", ".countdown");
                return {
                    background: style("body").backgroundColor,
                    texts: ["#prompt-vi", "#prompt-en", ".pointer", ".countdown"].map((sel) => ({
                        sel, color: style(sel).color, size: parseFloat(style(sel).fontSize),
                        weight: Number(style(sel).fontWeight)})),
                    icon: {color: style(".pictogram").color, box: box(".pictogram")},
                    boxes: shown.map((sel) => ({sel, ...box(sel)})),
                };
            }""")
            for text in look["texts"]:
                ratio = contrast(text["color"], look["background"])
                assert ratio >= MIN_CONTRAST, (screen, prompt, text, look["background"], ratio)
                large = text["size"] >= MIN_LARGE_TEXT_PX or (
                    text["size"] >= 18.66 and text["weight"] >= 700
                )
                assert large, (screen, prompt, text)
            # Non-text contrast (1.4.11) and a pictogram at least twice the words' height.
            assert contrast(look["icon"]["color"], look["background"]) >= MIN_CONTRAST
            assert look["icon"]["box"]["height"] >= 2 * look["texts"][0]["size"], (screen, prompt)
            for box in look["boxes"]:
                assert box["top"] >= 0 and box["bottom"] <= viewport["height"], (
                    screen,
                    prompt,
                    box,
                )
                assert box["left"] >= 0 and box["right"] <= viewport["width"], (screen, prompt, box)
        # The face's state badges: the white icon against each badge colour.
        badges = page.evaluate("""() => ["checking", "mask", "incorrect_mask", "no_mask"].map((s) => {
            const face = document.getElementById("face");
            face.dataset.state = s;
            const badge = getComputedStyle(face.querySelector(".badge"));
            return {state: s, color: badge.color, background: badge.backgroundColor};
        })""")
        for badge in badges:
            assert contrast(badge["color"], badge["background"]) >= MIN_CONTRAST, badge
        page.context.close()  # the next screen's page is the only one listening


def test_each_prompt_starts_its_sound(
    open_kiosk: Callable[..., playwright_api.Page], served: tuple[LiveServer, FakeRuntime]
) -> None:
    """The cue, then the spoken prompt: the media elements report play and playing for
    each file. The idle and checking screens stay silent."""
    live, runtime = served
    page = open_kiosk("landscape")
    wait_for_stream(runtime, 1)
    for prompt in PROMPTS:
        page.evaluate("window.heard = []")
        move(live, runtime, prompt, None)
        settled_on(page, prompt, "still")
        if prompt not in PROMPT_CUES:
            page.wait_for_timeout(500)
            assert page.evaluate("window.heard") == [], prompt
            continue
        cue = f"/kiosk/sounds/cue-{PROMPT_CUES[prompt]}"
        words = f"/kiosk/sounds/{prompt}"
        heard = until(
            page,
            f"window.heard.some((e) => e.kind === 'playing' && e.src.endsWith('{words}'))"
            " && window.heard",
        )
        events = [(e["id"], e["kind"], e["src"].split(live.url)[-1]) for e in heard]
        assert ("cue", "play", cue) in events and ("cue", "playing", cue) in events, events
        assert ("speech", "play", words) in events, events
        assert not [e for e in events if e[1] == "error"], events
        # The words come after the cue has played.
        assert events.index(("cue", "playing", cue)) < events.index(("speech", "play", words))


def test_quiet_hours_silence_the_kiosk(
    open_kiosk: Callable[..., playwright_api.Page], served: tuple[LiveServer, FakeRuntime]
) -> None:
    live, runtime = served
    runtime.settings.kiosk = KioskSettings(quiet_hours=(dt.time(0), dt.time(23, 59, 59)))
    page = open_kiosk("small")
    wait_for_stream(runtime, 1)
    move(live, runtime, "wear_mask", None)
    settled_on(page, "wear_mask", "still")
    page.wait_for_timeout(800)
    assert page.evaluate("window.heard") == []


def test_no_picture_is_shown_or_kept_when_nobody_is_in_view(
    open_kiosk: Callable[..., playwright_api.Page],
    served: tuple[LiveServer, FakeRuntime],
    sights: dict[str, Sight],
) -> None:
    """Before anyone comes and after the visitor has gone, the canvas holds no pixels
    (it is sized 0x0, not just hidden) and no face is marked."""
    live, runtime = served
    page = open_kiosk("landscape")
    picture = """() => {
        const c = document.getElementById("picture");
        return {w: c.width, h: c.height, view: document.body.dataset.view,
                face: document.getElementById("face").checkVisibility()};
    }"""
    page.wait_for_timeout(600)  # several polls with nobody there
    assert page.evaluate(picture) == {"w": 0, "h": 0, "view": "still", "face": False}
    move(live, runtime, "checking", sights["no_mask"])
    settled_on(page, "checking", "mirror")
    mirror = page.evaluate(picture)
    assert mirror == {"w": 640, "h": 480, "view": "mirror", "face": True}
    # The picture is the camera's, mirrored: its mean brightness matches the frame's.
    drawn = page.evaluate("""() => {
        const c = document.getElementById("picture");
        const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let sum = 0; for (let i = 0; i < px.length; i += 4) sum += px[i + 1];
        return sum / (px.length / 4);
    }""")
    assert abs(drawn - float(sights["no_mask"].frame[:, :, 1].mean())) < 3
    move(live, runtime, "idle", None)  # the visitor walked away
    settled_on(page, "idle", "still")
    assert page.evaluate(picture) == {"w": 0, "h": 0, "view": "still", "face": False}
    save_shot(page, "landscape-after-visitor-left")


def test_the_prompts_go_on_when_the_video_stops(
    open_kiosk: Callable[..., playwright_api.Page],
    served: tuple[LiveServer, FakeRuntime],
    sights: dict[str, Sight],
) -> None:
    live, runtime = served
    page = open_kiosk("small")
    wait_for_stream(runtime, 1)
    move(live, runtime, "checking", sights["mask"])
    settled_on(page, "checking", "mirror")
    page.route("**/kiosk/frame", lambda route: route.abort())  # the video is gone
    settled_on(page, "checking", "still")
    page.evaluate("window.heard = []")
    move(live, runtime, "sanitize", sights["mask"])
    settled_on(page, "sanitize", "still")
    until(page, "window.heard.some((e) => e.kind === 'playing' && e.src.endsWith('/sanitize'))")
    page.unroute("**/kiosk/frame")
    settled_on(page, "sanitize", "mirror")  # and the picture comes back by itself


def test_a_kiosk_left_open_does_not_grow(
    open_kiosk: Callable[..., playwright_api.Page],
    served: tuple[LiveServer, FakeRuntime],
    sights: dict[str, Sight],
) -> None:
    """Simulated visitors, time-compressed (one visit every ~2.5 s, ten frames a second),
    for SOAK_MINUTES: the JS heap after garbage collection at the end is within 10 % of
    where it was after the first minute, and the DOM and listener counts do not grow."""
    live, runtime = served
    page = open_kiosk("landscape", observe=False)  # the test's event log would grow
    wait_for_stream(runtime, 1)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def measure() -> dict[str, float]:
        cdp.send("HeapProfiler.collectGarbage")
        heap = cdp.send("Runtime.getHeapUsage")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        return {
            "heap": heap["usedSize"],
            "nodes": metrics["Nodes"],
            "listeners": metrics["JSEventListeners"],
        }

    visit = [
        ("checking", "far"),
        ("checking", "no_mask"),
        ("wear_mask", "no_mask"),
        ("idle", None),
        ("pull_mask_up", "under_nose"),
        ("sanitize", "mask"),
        ("enter", "mask"),
        ("idle", None),
    ]
    start = time.monotonic()
    minutes: list[dict[str, float]] = []  # measured after the visit that ends each minute
    visits = 0
    while (elapsed := time.monotonic() - start) < SOAK_MINUTES * 60:
        for prompt, look in visit:
            move(live, runtime, prompt, sights[look] if look else None)
            time.sleep(0.3)
        visits += 1
        if time.monotonic() - start >= 60 * (len(minutes) + 1):
            minutes.append(measure())
    end = measure()
    first_minute = minutes[0]
    growth = end["heap"] / first_minute["heap"] - 1
    by_minute = " ".join(f"{m['heap'] / 1e6:.2f}" for m in minutes)
    print(
        f"\nkiosk soak: {visits} visits in {elapsed / 60:.1f} min; JS heap after GC "
        f"{first_minute['heap'] / 1e6:.2f} MB at 1 min, {end['heap'] / 1e6:.2f} MB at the end "
        f"({growth:+.1%}); DOM nodes {first_minute['nodes']:.0f} -> {end['nodes']:.0f}; "
        f"listeners {first_minute['listeners']:.0f} -> {end['listeners']:.0f}\n"
        f"heap each minute (MB): {by_minute}"
    )
    assert growth <= 0.10
    # Anything kept per visit would add at least one node or listener each time.
    assert end["nodes"] - first_minute["nodes"] < 0.1 * visits
    assert end["listeners"] <= first_minute["listeners"]
