"""The visitor screen: the visitor's own mirrored picture, a pictogram, two languages, a voice.

No login (it hangs on a wall next to the door), so all of it is served only to the
addresses in ``server.kiosk_addresses``: the page, its event stream (which carries
nothing but the prompt key: no entries, no alerts, no names), its sounds, and above
all the camera picture, which never leaves the gate's own computer.

The picture is a frame endpoint the page polls, not a stream: while nobody is in
view it answers 204 with no picture at all, so the screen falls back to a still,
neutral one and nothing of the last visitor stays in the page.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from ipaddress import ip_address
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from gate.camera.verdict import FrameAnalysis
from gate.config import Settings
from gate.events import Event
from gate.server import audio, streams
from gate.server.i18n import N_, translate
from gate.server.textinput import Text
from gate.server.texts import PROMPTS
from gate.server.web import direct_client, panel, render

# A face narrower than this share of the picture is asked to come closer, wider to step back.
# (The short-range face detector finds faces down to about 0.17 of the width.)
COME_CLOSER_BELOW = 0.2
STEP_BACK_ABOVE = 0.45
MIRROR_JPEG_QUALITY = 75
NO_STORE = {"Cache-Control": "no-store"}
# Words on the kiosk besides the prompts, each shown Vietnamese first.
HINTS: dict[str, str] = {
    "closer": N_("Please come closer"),
    "back": N_("Please step back a little"),
    "dispenser": N_("Dispenser"),
    "seconds": N_("seconds left"),
}


def kiosk_address(request: Request) -> None:
    """403 unless the client (not relayed by a proxy) is one of server.kiosk_addresses."""
    try:
        client = ip_address(direct_client(request))
    except ValueError:  # relayed by a proxy, or not an address at all
        client = None
    if client not in panel(request).settings.server.kiosk_addresses:
        raise HTTPException(403, N_("this screen is only served to the kiosk"))


router = APIRouter(prefix="/kiosk", dependencies=[Depends(kiosk_address)])


def bilingual(table: dict[str, str] = PROMPTS) -> dict[str, tuple[str, str]]:
    """Each text as (Vietnamese, English): Vietnamese first, whatever the panel language."""
    return {key: (translate("vi", text), translate("en", text)) for key, text in table.items()}


def current_prompt(request: Request) -> str:
    prompt = panel(request).runtime.snapshot().get("prompt")
    return prompt if prompt in PROMPTS else "idle"


def volume_now(settings: Settings) -> float:
    """The kiosk's volume now, in the gate's own time zone (quiet hours are local)."""
    now = datetime.now(ZoneInfo(settings.server.timezone)).time()
    return settings.kiosk.volume_at(now)


@router.get("")
async def kiosk_page(request: Request) -> Response:
    settings = panel(request).settings
    return render(
        request,
        "kiosk.html",
        {
            "prompts": bilingual(),
            "hints": bilingual(HINTS),
            "prompt": current_prompt(request),
            "setup": {
                "cues": audio.PROMPT_CUES,
                "sanitize_seconds": settings.policy.sanitizer_timeout_seconds,
                "fps": settings.server.mjpeg_fps,
                "volume": volume_now(settings),
            },
            "dispenser_side": settings.kiosk.dispenser_side,
        },
    )


def _prompt_only(settings: Settings, event: Event) -> dict[str, Any] | None:
    """Reduce an event to the prompt key (and the volume to say it at); everything else
    stays on the staff side."""
    if event.kind in ("prompt", "state"):
        prompt = event.data.get("prompt")
        if prompt in PROMPTS:
            return {"prompt": prompt, "volume": volume_now(settings)}
    return None


@router.get("/events")
async def kiosk_events(request: Request) -> Response:
    """Every (re)connect starts with the current prompt, from now on. A reconnecting
    screen's Last-Event-ID may come from before a restart (the bus counts anew), and
    the prompts it missed are stale anyway: only the current one is shown."""
    p = panel(request)
    runtime = p.runtime
    recent = runtime.bus.recent()
    now = recent[-1].id if recent else 0
    first = {"prompt": current_prompt(request), "volume": volume_now(p.settings)}
    stream = streams.sse_stream(
        runtime.bus,
        now,
        partial(_prompt_only, p.settings),
        first=[streams.sse_message(now, "prompt", first)],
        name="prompt",  # the screen listens to prompts: one a state change brings is one too
    )
    return streams.endless_response(stream, runtime.stopping, "text/event-stream")


def face_marks(analysis: FrameAnalysis, width: int, height: int) -> list[dict[str, Any]]:
    """The faces as the mirrored picture shows them: boxes as shares of the picture
    (x flipped), the state to colour them by, and whether to come closer or step back."""
    marks = []
    for face in analysis.faces:
        x, y, w, h = face.box
        share = w / width
        hint = "closer" if share < COME_CLOSER_BELOW else "back" if share > STEP_BACK_ABOVE else ""
        marks.append(
            {
                "x": round(1 - (x + w) / width, 4),
                "y": round(y / height, 4),
                "w": round(w / width, 4),
                "h": round(h / height, 4),
                "state": face.label.value if face.settled else "checking",
                "hint": hint,
            }
        )
    return marks


def mirrored_jpeg(frame: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(
        ".jpg", cv2.flip(frame, 1), [cv2.IMWRITE_JPEG_QUALITY, MIRROR_JPEG_QUALITY]
    )
    if not ok:
        raise ValueError("frame could not be JPEG-encoded")
    return buffer.tobytes()


@router.get("/frame")
async def kiosk_frame(request: Request) -> Response:
    """The newest frame, mirrored, with its faces in the X-Faces header (JSON). 204 and
    no picture when nobody is in view or the camera is down. Encoded afresh for each
    request and kept nowhere, so no picture outlives the visitor."""
    sight = panel(request).runtime.sight()
    if sight is None or not sight[1].faces:
        return Response(status_code=204, headers=NO_STORE)
    frame, analysis = sight
    height, width = frame.shape[:2]
    jpeg = await run_in_threadpool(mirrored_jpeg, frame)
    marks = json.dumps(face_marks(analysis, width, height), separators=(",", ":"))
    return Response(jpeg, media_type="image/jpeg", headers={**NO_STORE, "X-Faces": marks})


@router.get("/sounds/{name}")
async def kiosk_sound(request: Request, name: Annotated[Text(64), Path()]) -> Response:
    """A cue or a spoken prompt: the site's own recording where it has one."""
    path = audio.sound_file(name, panel(request).settings.kiosk.sounds_dir)
    if path is None:
        raise HTTPException(404, N_("no such sound"))
    return FileResponse(path)
