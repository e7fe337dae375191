"""The kiosk's sounds: a short cue per kind of outcome, then the prompt spoken in Vietnamese.

One file per sound, looked up first in the site's folder (``kiosk.sounds_dir``, its
own recordings) and then among the shipped defaults in ``gate/server/sounds/``. The
project makes the defaults itself, with ``gate kiosk sounds``: the cues are tones
synthesised here, the speech is Debian's espeak-ng with its Vietnamese voice, and
both are stored as small Ogg Vorbis files.

Nobody is spoken to on the idle or checking screens: a gate that talks to an empty
hall, or for the tenth of a second a check takes, is noise.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from gate.errors import GateError
from gate.server.i18n import translate
from gate.server.texts import PROMPTS

SHIPPED_DIR = Path(__file__).with_name("sounds")
FORMATS = (".ogg", ".opus", ".wav", ".mp3")  # what Chromium plays, in the order looked for
RATE = 22050  # espeak-ng's own rate; the cues use it too
# The cue before each spoken prompt: go, stop, or attention (something to do or know).
PROMPT_CUES: dict[str, str] = {
    "enter": "go",
    "wear_mask": "stop",
    "pull_mask_up": "stop",
    "lockdown": "stop",
    "sanitize": "attention",
    "wait_full": "attention",
    "emergency": "attention",
    "out_of_service": "attention",
}
CUES = ("go", "stop", "attention")
SOUNDS = frozenset({*PROMPT_CUES, *(f"cue-{kind}" for kind in CUES)})
# Notes (Hz, seconds): rising for go, falling and low for stop, three even beeps for attention.
CUE_NOTES: dict[str, list[tuple[float, float]]] = {
    "go": [(523.25, 0.12), (783.99, 0.22)],
    "stop": [(392.0, 0.18), (261.63, 0.32)],
    "attention": [(880.0, 0.09), (0.0, 0.06), (880.0, 0.09), (0.0, 0.06), (880.0, 0.09)],
}

kiosk_app = typer.Typer(help="The visitor's screen.", no_args_is_help=True)


def sound_file(name: str, site_dir: Path | None) -> Path | None:
    """The file to play for ``name``: the site's recording if it has one, else ours."""
    if name not in SOUNDS:
        return None
    for folder in (site_dir, SHIPPED_DIR):
        for suffix in FORMATS:
            if folder is not None and (path := folder / f"{name}{suffix}").is_file():
                return path
    return None


def cue(kind: str) -> np.ndarray:
    """A cue as float samples in -1..1: sine notes with a soft start and end (no clicks)."""
    parts = []
    for frequency, seconds in CUE_NOTES[kind]:
        t = np.arange(int(seconds * RATE)) / RATE
        # A little of the octave makes a small loudspeaker carry the note.
        note = np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(4 * np.pi * frequency * t)
        fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.015)
        parts.append(0.6 * note * fade / 1.3)
    return np.concatenate(parts).astype(np.float32)


def spoken_text(prompt: str) -> str:
    """What the voice says: the screen's Vietnamese, with brackets read as a pause."""
    text = translate("vi", PROMPTS[prompt])
    return text.replace(" (", ", ").replace(")", "").replace("…", "")


def speak(text: str) -> np.ndarray:
    """``text`` in espeak-ng's Vietnamese voice, as float samples at RATE."""
    if shutil.which("espeak-ng") is None:
        raise GateError("espeak-ng is not installed: apt-get install espeak-ng")
    done = subprocess.run(
        ["espeak-ng", "-v", "vi", "-s", "140", "--stdout", text],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise GateError(f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(done.stdout)) as speech:
        if speech.getframerate() != RATE or speech.getsampwidth() != 2:
            raise GateError("espeak-ng gave audio in an unexpected format")
        samples = np.frombuffer(speech.readframes(speech.getnframes()), np.int16)
    samples = samples.astype(np.float32) / 32768
    peak = float(np.abs(samples).max()) or 1.0
    return samples * (0.9 / peak)


def write_ogg(path: Path, samples: np.ndarray) -> None:
    try:
        import soundfile  # in the test extra: a gate at a door never makes sounds
    except ImportError:
        raise GateError("soundfile is not installed: pip install soundfile") from None

    soundfile.write(path, samples, RATE, format="OGG", subtype="VORBIS")


def make_sounds(folder: Path) -> list[Path]:
    """Write every cue and spoken prompt into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in CUES:
        written.append(folder / f"cue-{kind}.ogg")
        write_ogg(written[-1], cue(kind))
    for prompt in PROMPT_CUES:
        written.append(folder / f"{prompt}.ogg")
        write_ogg(written[-1], speak(spoken_text(prompt)))
    return written


@kiosk_app.command("sounds")
def sounds_command(
    out: Annotated[
        Path, typer.Option(help="Folder to write into; the default replaces the shipped ones.")
    ] = SHIPPED_DIR,
) -> None:
    """Make the kiosk's cues and Vietnamese spoken prompts (needs espeak-ng)."""
    for path in make_sounds(out):
        typer.echo(f"{path}  {path.stat().st_size} bytes")
