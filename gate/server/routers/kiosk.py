"""The visitor screen: big bilingual prompts that follow the controller.

No login (it hangs on a wall next to the door), so it is served only to the
addresses in ``server.kiosk_addresses`` and its event stream carries nothing
but the prompt key: no entries, no alerts, no names.
"""

from __future__ import annotations

from ipaddress import ip_address

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from gate.events import Event
from gate.server import streams
from gate.server.i18n import N_, translate
from gate.server.texts import PROMPTS
from gate.server.web import direct_client, panel, render


def kiosk_address(request: Request) -> None:
    """403 unless the client (not relayed by a proxy) is one of server.kiosk_addresses."""
    try:
        client = ip_address(direct_client(request))
    except ValueError:  # relayed by a proxy, or not an address at all
        client = None
    if client not in panel(request).settings.server.kiosk_addresses:
        raise HTTPException(403, N_("this screen is only served to the kiosk"))


router = APIRouter(prefix="/kiosk", dependencies=[Depends(kiosk_address)])


def bilingual() -> dict[str, tuple[str, str]]:
    """Each prompt as (Vietnamese, English): Vietnamese first, whatever the panel language."""
    return {key: (translate("vi", text), translate("en", text)) for key, text in PROMPTS.items()}


def current_prompt(request: Request) -> str:
    prompt = panel(request).runtime.snapshot().get("prompt")
    return prompt if prompt in PROMPTS else "idle"


@router.get("")
async def kiosk_page(request: Request) -> Response:
    return render(
        request, "kiosk.html", {"prompts": bilingual(), "prompt": current_prompt(request)}
    )


def _prompt_only(event: Event) -> dict[str, str] | None:
    """Reduce an event to {'prompt': key}; everything else stays on the staff side."""
    if event.kind in ("prompt", "state"):
        prompt = event.data.get("prompt")
        if prompt in PROMPTS:
            return {"prompt": prompt}
    return None


@router.get("/events")
async def kiosk_events(request: Request) -> Response:
    """Every (re)connect starts with the current prompt, from now on. A reconnecting
    screen's Last-Event-ID may come from before a restart (the bus counts anew), and
    the prompts it missed are stale anyway: only the current one is shown."""
    runtime = panel(request).runtime
    recent = runtime.bus.recent()
    now = recent[-1].id if recent else 0
    stream = streams.sse_stream(
        runtime.bus,
        now,
        _prompt_only,
        first=[streams.sse_message(now, "prompt", {"prompt": current_prompt(request)})],
        name="prompt",  # the screen listens to prompts: one a state change brings is one too
    )
    return streams.endless_response(stream, runtime.stopping, "text/event-stream")
